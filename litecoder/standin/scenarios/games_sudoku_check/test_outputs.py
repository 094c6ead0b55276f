def test_valid():
    assert open("/app/valid.txt").read().split() == ["a.txt", "c.txt"]
