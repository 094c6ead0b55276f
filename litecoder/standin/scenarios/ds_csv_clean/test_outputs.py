import csv
import json
import os


def test_script_exists():
    assert os.path.exists("/app/clean.py")


def test_clean_csv():
    with open("/app/data/sales_clean.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["date", "region", "amount"],
        ["2024-03-01", "north", "3.25"],
        ["2024-03-01", "south", "4.75"],
        ["2024-03-02", "east", "12.00"],
        ["2024-03-05", "north", "10.50"],
        ["2024-03-05", "south", "7.00"],
    ]


def test_summary():
    with open("/app/data/summary.json") as f:
        assert json.load(f) == {"east": 12.0, "north": 13.75, "south": 11.75}
