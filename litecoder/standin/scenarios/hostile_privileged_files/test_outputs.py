def test_done():
    assert open("/app/notes.txt").read() == "done\n"
