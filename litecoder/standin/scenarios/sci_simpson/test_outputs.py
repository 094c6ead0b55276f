def test_distance():
    assert open("/app/distance.txt").read().strip() == "1020.000000"
