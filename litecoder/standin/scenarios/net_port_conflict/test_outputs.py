def read(name):
    return open(f"/app/services/{name}").read()


def test_metrics_moved():
    assert read("metrics.conf") == "name = metrics\nlisten = 9102\nscrape_interval = 15s\n"


def test_others_untouched():
    assert read("exporter.conf") == "name = exporter\nlisten = 9100\n"
    assert read("api.conf") == "name = api\nlisten = 8080\nworkers = 4\n"


def test_ports_listing():
    lines = open("/app/ports.txt").read().split("\n")
    assert [ln for ln in lines if ln] == [
        "api.conf 8080",
        "exporter.conf 9100",
        "admin.conf 9101",
        "metrics.conf 9102",
        "cache.conf 9103",
    ]
