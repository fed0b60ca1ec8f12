"""CDNOW master file parsing and mapping onto the contract (pure: no database)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest

from spendpred.datasets import cdnow
from spendpred.errors import DataError

REAL_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "CDNOW_master.txt"
HEADER = " customer_id  date number_of_cds  dollar_value"
GOOD_LINES = [
    " 00001 19970101  1   11.77",
    " 00002 19970112  1   12.00",
    " 00002 19970112  5   77.00",
    " 00003 19970102  2   20.76",
    " 00003 19970330  1    0.00",
    " 00003 19970402  2   19.54",
]


def _write(tmp_path: Path, lines: list[str], name: str = "CDNOW_master.txt", crlf: bool = True) -> Path:
    path = tmp_path / name
    sep = "\r\n" if crlf else "\n"
    path.write_bytes((sep.join(lines) + sep).encode("utf-8"))
    return path


def test_parse_small_file(tmp_path: Path) -> None:
    table = cdnow.parse_cdnow(_write(tmp_path, [HEADER, *GOOD_LINES]))
    assert table.schema == cdnow.PARSED_SCHEMA
    rows = table.to_pylist()
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6, 7]
    assert [r["customer_id"] for r in rows] == ["1", "2", "2", "3", "3", "3"]
    assert rows[0]["ordered_at"] == dt.datetime(1997, 1, 1, 0, 0)
    assert rows[2]["items"] == 5 and rows[2]["amount"] == 77.0
    assert rows[4]["amount"] == 0.0  # zero-dollar purchases are kept


def test_blank_lines_unix_newlines_and_missing_header(tmp_path: Path) -> None:
    lines = [GOOD_LINES[0], "", "   ", GOOD_LINES[1]]
    table = cdnow.parse_cdnow(_write(tmp_path, lines, crlf=False))
    assert table.column("line").to_pylist() == [1, 4]  # no header: first line is data
    assert table.column("customer_id").to_pylist() == ["1", "2"]


def test_mapping_onto_users_and_orders(tmp_path: Path) -> None:
    tables = cdnow.cdnow_tables(cdnow.parse_cdnow(_write(tmp_path, [HEADER, *GOOD_LINES])))
    users, orders = tables["users"], tables["orders"]
    assert users.column_names == ["user_id", "signup_at", "country", "segment"]
    assert orders.column_names == ["order_id", "user_id", "ordered_at", "amount", "items", "category", "status"]
    assert users.column("user_id").to_pylist() == ["1", "2", "3"]
    assert users.column("signup_at").to_pylist() == [
        dt.datetime(1997, 1, 1),
        dt.datetime(1997, 1, 12),
        dt.datetime(1997, 1, 2),
    ]
    assert users.column("country").null_count == 3
    assert orders.column("order_id").to_pylist() == [
        "cdnow-1-2", "cdnow-2-3", "cdnow-2-4", "cdnow-3-5", "cdnow-3-6", "cdnow-3-7",
    ]  # fmt: skip
    assert set(orders.column("category").to_pylist()) == {"music"}
    assert set(orders.column("status").to_pylist()) == {"completed"}
    assert orders.column("items").to_pylist() == [1, 1, 5, 2, 1, 2]


def test_users_sorted_numerically(tmp_path: Path) -> None:
    lines = [HEADER, " 00010 19970101 1 1.00", " 00009 19970101 1 1.00", " 00100 19970101 1 1.00"]
    users = cdnow.cdnow_tables(cdnow.parse_cdnow(_write(tmp_path, lines)))["users"]
    assert users.column("user_id").to_pylist() == ["9", "10", "100"]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        (" 00004 19971332  1   12.00", "date '19971332' is not a valid YYYYMMDD date"),
        (" 00004 19970230  1   12.00", "date '19970230' is not a valid YYYYMMDD date"),
        (" 00004 1997011  1   12.00", "date '1997011' is not a valid YYYYMMDD date"),
        (" 00004 1997-01-01  1   12.00", "date '1997-01-01' is not a valid YYYYMMDD date"),
        (" 00004 19970101  1   -3.50", "dollar value '-3.50' is negative"),
        (" 00004 19970101  1   abc", "dollar value 'abc' is not a plain decimal number"),
        (" 00004 19970101  1   12,50", "dollar value '12,50' is not a plain decimal number"),
        (" 00004 19970101  1   nan", "dollar value 'nan' is not a plain decimal number"),
        (" 00004 19970101  1   99999999999.00", "dollar value '99999999999.00' is too large"),
        (" 00004 19970101  0   0.00", "number of CDs '0' is less than 1"),
        (" 00004 19970101  1.5 12.00", "number of CDs '1.5' is not a whole number"),
        (" 00004 19970101  -2 12.00", "number of CDs '-2' is not a whole number"),
        (" A0004 19970101  1   12.00", "customer id 'A0004' is not a whole number"),
        (" 00004 19970101  12.00", "expected 4 whitespace-separated fields"),
        (" 00004 19970101  1  12.00 extra", "expected 4 whitespace-separated fields"),
    ],
)
def test_malformed_line_names_file_line_problem_and_text(tmp_path: Path, bad_line: str, problem: str) -> None:
    path = _write(tmp_path, [HEADER, *GOOD_LINES[:3], bad_line, *GOOD_LINES[3:]])
    with pytest.raises(DataError) as info:
        cdnow.parse_cdnow(path)
    message = str(info.value)
    assert message.startswith(f"CDNOW_master.txt line 5: {problem}")
    assert repr(bad_line.strip()) in message
    assert "nothing was imported" in message
    assert "more malformed" not in message


def test_field_count_is_reported_with_the_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 3: expected 4 whitespace-separated fields .*found 3"):
        cdnow.parse_cdnow(_write(tmp_path, [HEADER, GOOD_LINES[0], " 00004 19970101 1"]))


def test_first_bad_line_is_reported_with_a_count_of_the_others(tmp_path: Path) -> None:
    lines = [HEADER, *GOOD_LINES, " 00004 19970101  1   -1.00", " 00005 19970199  1   1.00", " 00006 19970101 x 1.0"]
    with pytest.raises(DataError, match=r"line 8: dollar value '-1.00' is negative .*\(and 2 more malformed lines\)"):
        cdnow.parse_cdnow(_write(tmp_path, lines))


def test_the_fast_check_and_the_line_check_agree_on_the_first_bad_line(tmp_path: Path) -> None:
    # the field-count check runs first and flags line 3, but line 2 is the file's first bad one
    lines = [HEADER, " 00004 19970101 1 -1.00", " 00005 19970101 1"]
    with pytest.raises(DataError, match=r"line 2: dollar value '-1.00' is negative .*\(and 1 more malformed line\)"):
        cdnow.parse_cdnow(_write(tmp_path, lines))


def test_missing_empty_header_only_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        cdnow.parse_cdnow(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt is empty"):
        cdnow.parse_cdnow(empty)
    with pytest.raises(DataError, match="header but no purchase lines"):
        cdnow.parse_cdnow(_write(tmp_path, [HEADER], name="header.txt"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(HEADER.encode() + b"\n 00001 19970101 1 1.00\n\xff\xfe\x00")
    with pytest.raises(DataError, match="binary.txt line 3: bytes that are not UTF-8"):
        cdnow.parse_cdnow(binary)


@pytest.mark.skipif(not REAL_FILE.is_file(), reason=f"CDNOW master file not found at {REAL_FILE}")
def test_parse_the_real_file() -> None:
    table = cdnow.parse_cdnow(REAL_FILE)
    assert table.num_rows == 69_659
    assert len(set(table.column("customer_id").to_pylist())) == 23_570
    expected_amount = Decimal(0)
    expected_items = 0
    for line in REAL_FILE.read_text().splitlines()[1:]:
        _, _, cds, dollars = line.split()
        expected_items += int(cds)
        expected_amount += Decimal(dollars)
    assert sum(table.column("items").to_pylist()) == expected_items
    assert Decimal(str(round(sum(table.column("amount").to_pylist()), 2))) == expected_amount
    dates = table.column("ordered_at").to_pylist()
    assert min(dates) == dt.datetime(1997, 1, 1) and max(dates) == dt.datetime(1998, 6, 30)
    assert table.column("amount").to_pylist().count(0.0) == 80


def test_fast_checks_agree_with_the_line_check_on_tricky_values(tmp_path: Path) -> None:
    """Each value alone in an otherwise good file: accepted exactly when the line check accepts it."""
    tricky = {
        0: ["00001", "1", "000000000000000001", "0x10", "-1", "1.0", "１"],
        1: ["19970101", "19960229", "19970229", "20000229", "19000229", "00000101", "19971231", "19970000", "199701011"],
        2: ["1", "01", "0", "00", "999999999", "1000000000", "+1", "1e2"],
        3: ["0", "0.00", "-0.00", "12.", ".5", "+3", "9999999999.99", "9999999999.999", "1e3", "inf", "1_000"],
    }
    for column, values in tricky.items():
        for value in values:
            fields = ["00007", "19970105", "2", "20.50"]
            fields[column] = value
            path = _write(tmp_path, [HEADER, GOOD_LINES[0], " " + " ".join(fields)], name="tricky.txt")
            expected = cdnow._line_problem(fields)
            if expected is None:
                assert cdnow.parse_cdnow(path).num_rows == 2, fields
            else:
                with pytest.raises(DataError, match=re.escape(f"line 3: {expected}")):
                    cdnow.parse_cdnow(path)
