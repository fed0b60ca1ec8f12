"""Benchmark: accuracy on a synthetic warehouse where the text carries signal, and the lift text brings.

Same rolling set-up and reporting as ``bench/accuracy_cdnow.py`` (which this script imports),
on a population from ``spendpred seed``: a user's latent purchasing power shapes not only
their orders but also the words of their searches and reviews (premium versus budget
vocabulary) and their favourite categories, which the numeric features do not see.

1. ``spendpred seed --users U --days 730 --end-date E --daily-active A`` into a throwaway
   ``SPENDPRED_HOME``;
2. for each text template of ``--template`` (``SPENDPRED_TEXT_TEMPLATE``) and each loss,
   ``spendpred train --as-of D --horizon-days H ...`` then ``spendpred score --as-of D --model
   <version>`` (D = E - H by default, so the labels in (D, D+H] are complete);
3. the **text-only** regressor: ``spendpred.model.train_regressor`` with
   ``use_features=False`` (the CLI cannot turn the features off), same users, same settings,
   predicting the same users as of D, once per template (its snapshots extracted with it);
4. baselines on the same users: past spend, GBT on the numeric features (features only),
   BG/NBD × Gamma-Gamma; every DESIGN.md metric; a lift table (text + features against
   features only against text only).

    .venv/bin/python bench/accuracy_synthetic.py                   # CPU-sized defaults
    .venv/bin/python bench/accuracy_synthetic.py --users 20000 --losses mse,huber,ziln --epochs 3 --freeze none  # GPU
    .venv/bin/python bench/accuracy_synthetic.py --template v1,v2  # both templates: paired bootstrap v2 - v1

With ``--template v1,v2`` every regressor is trained and scored once per template on the same
users (results ``bert_<loss>_v1`` / ``bert_<loss>_v2``, text-only likewise), and the paired
bootstrap reports each v2 model minus its v1 twin: what leaving the relative times out of
the text costs or gains.

CPU-sized defaults: 3,000 users, one loss (ziln), the encoder frozen and up to 40 epochs of
the head (see ``bench/accuracy_cdnow.py`` for why). The text-only regressor uses the last
loss listed and the same freeze and epochs.

Plain public tools only: the ``spendpred`` CLI and spendpred's public Python API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_cdnow import (  # noqa: E402 - the sibling script, imported after the path is set
    Cli,
    baselines_and_report,
    common_arguments,
    model_name,
    open_home,
    parse_losses,
    parse_templates,
    say,
    train_and_score_templates,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the synthetic accuracy benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000, help="Users to generate (default 3000).")
    parser.add_argument("--days", type=int, default=730, help="Days of history (default 730).")
    parser.add_argument("--end-date", default="2024-12-31", help="Last day of history (default 2024-12-31).")
    parser.add_argument("--data-seed", type=int, default=42, help="spendpred seed --seed (default 42).")
    parser.add_argument("--daily-active", type=float, default=None,
                        help="spendpred seed --daily-active: share of users acting on a given day (default: the seed's, 0.05).")
    parser.add_argument("--no-text-only", action="store_true", help="Skip the text-only regressor.")
    common_arguments(parser, run_date="", horizon=90, losses="ziln", epochs=40, max_users=0, freeze="all-but-head",
                     out="bench/results/accuracy_synthetic.json")
    args = parser.parse_args(argv)
    end = dt.date.fromisoformat(args.end_date)
    run_date = dt.date.fromisoformat(args.run_date) if args.run_date else end - dt.timedelta(days=args.horizon_days)
    if run_date + dt.timedelta(days=args.horizon_days) > end:
        parser.error(f"--run-date {run_date} + H runs past --end-date {end}: the labels would be incomplete")
    losses = parse_losses(args.losses)
    templates = parse_templates(args.template)
    max_users = args.max_users or None
    home, temporary = open_home(args.home)
    cli = Cli(home, args.horizon_days)
    url = f"sqlite:///{home / 'warehouse.db'}"
    from spendpred.config import get_settings

    app_settings = get_settings()
    encoder_dir = app_settings.resolved_encoder_dir
    settings = {
        "users": args.users, "days": args.days, "end_date": end.isoformat(), "data_seed": args.data_seed,
        "daily_active": args.daily_active or "default", "run_date": run_date.isoformat(),
        "horizon_days": args.horizon_days, "losses": ",".join(losses), "text_template": ",".join(templates),
        "epochs": args.epochs, "max_users": max_users or "all", "freeze": args.freeze, "encoder": str(encoder_dir),
        "text_only": not args.no_text_only, "publish": not args.no_publish, "seed": args.seed, "home": str(home),
    }
    say("settings: " + json.dumps(settings))

    def text_only(
        train_frame: pd.DataFrame, evaluation: pd.DataFrame, train_mask: np.ndarray, fit_mask: np.ndarray, features: list[str]
    ) -> dict[str, np.ndarray]:
        """The regressor without numeric features, trained on the CLI regressor's users with its settings.

        Once per template: the snapshots ``baselines_and_report`` extracted (``bench/train``,
        ``bench/eval``) use the last template; the others are extracted here, same dates.
        """
        if args.no_text_only:
            return {}
        from spendpred.model import TrainConfig, train_regressor

        loss = losses[-1]
        out: dict[str, np.ndarray] = {}
        cli_template = cli.env.get("SPENDPRED_TEXT_TEMPLATE")
        for template in templates:
            train_dir, eval_dir = home / "bench" / "train", home / "bench" / "eval"
            manifest = json.loads((train_dir / "manifest.json").read_text(encoding="utf-8"))
            train_texts, eval_frame = train_frame, evaluation
            if manifest["text_template_version"] != template:
                cli.env["SPENDPRED_TEXT_TEMPLATE"] = template
                train_dir, eval_dir = home / "bench" / f"train-{template}", home / "bench" / f"eval-{template}"
                cli(f"extract-train-{template}", "extract", "--as-of", manifest["as_of"], "--with-labels",
                    "--horizon-days", str(args.horizon_days), "--out", str(train_dir))
                cli(f"extract-eval-{template}", "extract", "--as-of", run_date.isoformat(), "--with-labels",
                    "--horizon-days", str(args.horizon_days), "--out", str(eval_dir))
                manifest = json.loads((train_dir / "manifest.json").read_text(encoding="utf-8"))
                train_texts, eval_frame = pd.read_parquet(train_dir / "snapshot.parquet"), pd.read_parquet(eval_dir / "snapshot.parquet")
                for mine, theirs in ((train_texts, train_frame), (eval_frame, evaluation)):
                    if mine["user_id"].astype(str).tolist() != theirs["user_id"].astype(str).tolist():
                        sys.exit(f"the {template} snapshots do not hold the same users in the same order")
            assert manifest["text_template_version"] == template
            config = TrainConfig(epochs=args.epochs, freeze=args.freeze, loss=loss, use_features=False,
                                 seed=app_settings.seed, device="auto", progress=False)
            say(f"training the text-only regressor (loss={loss}, template {template}, use_features=False) "
                "with spendpred.model.train_regressor")
            result = train_regressor(train_texts[train_mask].reset_index(drop=True),
                                     train_texts[fit_mask & ~train_mask].reset_index(drop=True),
                                     features, config, encoder_dir, manifest["text_template_version"])
            say(f"scoring the text-only regressor (template {template})")
            out[model_name(loss, template, templates, "_text_only")] = result.bundle.predict(eval_frame)
        if cli_template is not None:
            cli.env["SPENDPRED_TEXT_TEMPLATE"] = cli_template
        return out

    try:
        seed_args = ["--users", str(args.users), "--days", str(args.days), "--end-date", end.isoformat(),
                     "--seed", str(args.data_seed)]
        if args.daily_active is not None:
            seed_args += ["--daily-active", str(args.daily_active)]
        cli("seed", "seed", *seed_args)
        scores, trained = train_and_score_templates(cli, url, run_date, args.horizon_days, losses, templates, args.epochs,
                                                    max_users, args.freeze, not args.no_publish)
        labels: dict[str, str] = {}
        for template in templates:
            shown = f" {template}" if len(templates) > 1 else ""
            for loss in losses:
                labels[model_name(loss, template, templates)] = f"bert_{loss}{shown} (text + features)"
                labels[model_name(loss, template, templates, "_text_only")] = f"bert_{loss}{shown} (text only)"
        labels["gbt_numeric"] = "gbt_numeric (features only)"
        result = baselines_and_report(
            name="Synthetic accuracy", cli=cli, url=url, run_date=run_date, horizon=args.horizon_days,
            max_users=max_users, model_scores=scores, extra_models=text_only, settings=settings, trained=trained,
            out_path=args.out, bootstrap_draws=args.bootstrap, seed=args.seed, labels=labels, templates=templates,
        )
        metrics = result["metrics"]
        rows = ["| variant | norm. Gini | top-10% capture | Spearman | RMSE |", "|---|---:|---:|---:|---:|"]
        with_features = [model_name(loss, t, templates) for t in templates for loss in losses]
        for name in [*with_features, *(m for m in metrics if "_text_only" in m), "gbt_numeric", "gbt_numeric_all_users"]:
            if name in metrics:
                m = metrics[name]
                rows.append(f"| {labels.get(name, name)} | {m['normalised_gini']:.3f} | {m['top10_capture']:.3f} | "
                            f"{m['spearman']:.3f} | {m['rmse']:.2f} |")
        print("\n### Lift from text\n\n" + "\n".join(rows) + "\n", flush=True)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"kept {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
