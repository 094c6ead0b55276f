import json


def test_confusion():
    assert json.load(open("/app/confusion.json")) == {"tp": 5, "fp": 2, "tn": 6, "fn": 2}


def test_metrics():
    m = json.load(open("/app/metrics.json"))
    assert m == {"accuracy": 0.7333, "precision": 0.7143, "recall": 0.7143, "f1": 0.7143}
