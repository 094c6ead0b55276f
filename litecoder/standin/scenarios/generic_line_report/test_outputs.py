def test_report():
    assert open("/app/report.txt").read().split("\n")[:4] == [
        "one.txt 3",
        "sub/three.txt 2",
        "sub/two.txt 1",
        "total 6",
    ]
