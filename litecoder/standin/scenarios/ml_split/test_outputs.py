import hashlib
import json


def expected():
    exp = {"train": [], "val": [], "test": []}
    for line in open("/app/data/corpus.jsonl"):
        h = int(hashlib.sha256(json.loads(line)["id"].encode()).hexdigest(), 16) % 10
        exp["test" if h == 0 else "val" if h == 1 else "train"].append(line)
    return exp


def test_splits():
    for name, lines in expected().items():
        assert open(f"/app/data/splits/{name}.jsonl").readlines() == lines


def test_counts():
    counts = json.load(open("/app/data/splits/counts.json"))
    assert counts == {k: len(v) for k, v in expected().items()}
