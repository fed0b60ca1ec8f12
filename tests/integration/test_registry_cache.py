"""The local model cache of ``registry.load_model``: a real MLflow SQLite store and artifact folder in tmp, a tiny real model.

A load keeps the downloaded bundle under ``<staging>/model-cache/v<version>-<run_id>/``; the next
load reads it from there (shown by removing the artifact from the store), checked against the
bundle's sha256 list first; a damaged entry is downloaded again with one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from spendpred import registry
from spendpred.config import Settings
from spendpred.errors import ModelError
from spendpred.files import sha256_file
from spendpred.registry import reading
from tests.integration.test_registry import Trained, _log, empty_store, fresh, trained  # noqa: F401 - fixtures


def _champion(settings: Settings, trained: Trained) -> tuple[str, str, Path]:
    """Log and promote one version; return its version, run id and the artifact store's bundle folder."""
    client = registry.get_client(settings)
    run_id, version = _log(trained, settings)
    registry.promote(client, version, trained.test_metrics, None)
    model_dir = Path(urlparse(client.get_model_version_download_uri(registry.REGISTERED_MODEL, version)).path)
    return version, run_id, model_dir / "artifacts" / "bundle"


def _remove(folder: Path) -> None:
    for file in sorted(folder.rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    folder.rmdir()


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == reading.__name__ and r.levelno == logging.WARNING]


def test_second_load_reads_the_cache_not_the_store(fresh: Settings, trained: Trained) -> None:
    version, run_id, stored = _champion(fresh, trained)
    model, info = registry.load_model("champion", settings=fresh, device="cpu")
    entry = reading.model_cache_dir(fresh) / f"v{version}-{run_id}"
    assert entry.parent == fresh.home / "staging" / "model-cache"
    assert (entry / "bundle" / "bundle.json").is_file()
    assert sha256_file(entry / "bundle" / "head.safetensors") == sha256_file(stored / "head.safetensors")
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no download folder left behind

    _remove(stored)  # the store lost the files: only the cache can serve the next load
    again, info_again = registry.load_model("champion", settings=fresh, device="cpu")
    assert str(info_again.version) == version == str(info.version)
    np.testing.assert_allclose(again.predict(trained.test_df), model.predict(trained.test_df), rtol=1e-6)
    np.testing.assert_allclose(again.predict(trained.test_df), trained.model.predict(trained.test_df), rtol=1e-6)


def test_a_damaged_entry_is_downloaded_again_with_one_warning(
    fresh: Settings, trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    version, run_id, stored = _champion(fresh, trained)
    registry.load_model("champion", settings=fresh, device="cpu")
    head = reading.model_cache_dir(fresh) / f"v{version}-{run_id}" / "bundle" / "head.safetensors"
    head.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.INFO, logger=reading.__name__):
        model, _ = registry.load_model("champion", settings=fresh, device="cpu")
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1
    assert "is damaged" in warnings[0] and "head.safetensors is corrupt" in warnings[0]
    assert sha256_file(head) == sha256_file(stored / "head.safetensors")  # the entry was replaced by a good copy
    np.testing.assert_allclose(model.predict(trained.test_df), trained.model.predict(trained.test_df), rtol=1e-6)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=reading.__name__):
        registry.load_model("champion", settings=fresh, device="cpu")
    assert _cache_warnings(caplog) == []  # repaired: read from the cache without a warning

    head.write_bytes(b"\x00" * 64)
    _remove(stored)  # damaged and no longer in the store: the download's error, not the cached file
    with pytest.raises(ModelError, match=f"version {version}: cannot download its model artifact"):
        registry.load_model("champion", settings=fresh, device="cpu")
    assert not head.parent.parent.exists()  # the damaged entry was removed, not left for the next load


def test_a_corrupt_download_is_not_cached(fresh: Settings, trained: Trained) -> None:
    _, _, stored = _champion(fresh, trained)
    (stored / "head.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"version 1: .*head\.safetensors is corrupt"):
        registry.load_model("champion", settings=fresh, device="cpu")
    assert list(reading.model_cache_dir(fresh).iterdir()) == []  # neither an entry nor the download folder


def test_cache_off_and_dst_dir_do_not_cache(fresh: Settings, trained: Trained, tmp_path: Path) -> None:
    _champion(fresh, trained)
    off = fresh.model_copy(update={"model_cache": False})
    registry.load_model("champion", settings=off, device="cpu")
    assert not reading.model_cache_dir(fresh).exists()
    registry.load_model("champion", settings=fresh, device="cpu", dst_dir=tmp_path / "kept")
    assert (tmp_path / "kept" / "bundle" / "bundle.json").is_file()
    assert not reading.model_cache_dir(fresh).exists()


def test_the_cache_keeps_the_most_recently_used_bundles(
    fresh: Settings, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MODEL_CACHE_KEEP", 2)
    first, first_run, _ = _champion(fresh, trained)
    second_run, second = _log(trained, fresh)
    third_run, third = _log(trained, fresh)
    cache = reading.model_cache_dir(fresh)
    registry.load_model(first, settings=fresh, device="cpu")
    registry.load_model(second, settings=fresh, device="cpu")
    assert {p.name for p in cache.iterdir()} == {f"v{first}-{first_run}", f"v{second}-{second_run}"}
    registry.load_model(third, settings=fresh, device="cpu")
    assert {p.name for p in cache.iterdir()} == {f"v{second}-{second_run}", f"v{third}-{third_run}"}


def test_object_storage_staging_caches_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "var", staging_dir="s3://bucket/staging")
    assert reading.model_cache_dir(settings) == tmp_path / "var" / "model-cache"
    assert reading.model_cache_dir(Settings(home=tmp_path / "var", staging_dir=str(tmp_path / "st"))) == (
        tmp_path / "st" / "model-cache"
    )
