"""Scripted scenarios of the offline stand-in teacher.

Each scenario is one terminal task that really runs offline in a Debian base image (bash, git,
python3 with pytest, coreutils): its MAGPIE text, the judge verdict the stand-in gives it, and
the material the stand-in's scripted envprep agent writes (starting files and setup commands,
reference solution, verifier tests) plus how the stand-in plays Terminus-2 on it (solve, fail
or loop). Rejected scenarios (vague, infeasible, unsafe) only have a text and a verdict.

None of this is a model: it is fixture data, named as such wherever it is served.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Literal

Behaviour = Literal["solve", "fail", "loop"]

GOOD = {
    "complexity_balance": (4, "Several concrete steps, but well within one terminal session."),
    "clarity": (5, "Inputs, paths and the expected end state are all named precisely."),
    "resource_availability": (5, "Needs only bash, coreutils, git and python3, all offline."),
    "verifiability": (5, "The end state is files and outputs a script can check exactly."),
    "safety": (5, "Works only on files inside the container."),
}


def _d(s: str) -> str:
    return textwrap.dedent(s).strip("\n") + "\n"


@dataclass(frozen=True)
class Scenario:
    id: str
    domain: str
    task: str
    scores: dict[str, tuple[int, str]] = field(default_factory=lambda: dict(GOOD))
    # --- environment (None for rejected tasks) ---
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> content
    setup: str = ""  # bash run after the files are written, builds the starting state
    solution: str = ""  # bash: the reference solution (solve.sh body)
    tests: str = ""  # pytest module checking the end state (tests/test_outputs.py)
    # --- how the stand-in plays Terminus-2 on it ---
    behaviour: Behaviour = "solve"
    wrong_solution: str = ""  # bash for behaviour "fail": plausible but wrong
    loop_command: str = ""  # command repeated for behaviour "loop"
    # Extra MAGPIE texts for the same scenario (paraphrases, reformatted copies).
    variants: tuple[str, ...] = ()
    # Scripted envprep turns that replace the defaults, per prompt step (test scenarios that
    # go wrong on purpose); "{base}" is replaced by the base image.
    envprep: dict[str, list[list[dict[str, str]]]] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return bool(self.solution and self.tests)

    @property
    def workdir(self) -> str:
        return "/app"


def _scores(**changes: tuple[int, str]) -> dict[str, tuple[int, str]]:
    s = dict(GOOD)
    s.update(changes)
    return s


def _write_action(path: str, content: str) -> dict[str, str]:
    return {"type": "write_file", "path": path, "content": content}


def _rejected(id: str, domain: str, task: str, **scores: tuple[int, str]) -> Scenario:
    return Scenario(id=id, domain=domain, task=task, scores=_scores(**scores))


# ------------------------------------------------------------------------------------------
# version_control

_MERGE_TASK = (
    "In /app/repo there is a git repository with two branches, `main` and `feature/greeting`, "
    "that both changed `greet.py`. Merge `feature/greeting` into `main` and resolve the "
    "conflict so that `greet.py` keeps both changes: the `--name NAME` option from the feature "
    "branch and the `--shout` flag from `main`. Running `python3 greet.py --name Ada --shout` "
    "must print `HELLO, ADA!`, and `python3 greet.py` must still print `Hello, world!`. Commit "
    "the merge on `main` as a merge commit whose parents are the two branch tips, and leave no "
    "conflict markers in any tracked file."
)

VC_MERGE = Scenario(
    id="vc_merge_conflict",
    domain="version_control",
    task=_MERGE_TASK,
    variants=(
        _MERGE_TASK.replace("In /app/repo there is", "Inside /app/repo there is").replace(
            "in any tracked file", "in the tracked files"
        ),
    ),
    files={
        "/app/repo/greet.py": _d("""
            import sys


            def main(argv):
                print("Hello, world!")


            if __name__ == "__main__":
                main(sys.argv[1:])
            """),
    },
    setup=_d("""
        cd /app/repo
        git init -q -b main
        git config user.email dev@example.com && git config user.name Dev
        git add greet.py && git commit -qm "Initial greeter"
        git checkout -qb feature/greeting
        cat > greet.py <<'PY'
        import argparse


        def main(argv):
            parser = argparse.ArgumentParser()
            parser.add_argument("--name", default="world")
            args = parser.parse_args(argv)
            print(f"Hello, {args.name}!")


        if __name__ == "__main__":
            import sys
            main(sys.argv[1:])
        PY
        git commit -qam "Add --name option"
        git checkout -q main
        cat > greet.py <<'PY'
        import argparse


        def main(argv):
            parser = argparse.ArgumentParser()
            parser.add_argument("--shout", action="store_true")
            args = parser.parse_args(argv)
            text = "Hello, world!"
            print(text.upper() if args.shout else text)


        if __name__ == "__main__":
            import sys
            main(sys.argv[1:])
        PY
        git commit -qam "Add --shout flag"
        """),
    solution=_d("""
        cd /app/repo
        git config user.email dev@example.com && git config user.name Dev
        git merge feature/greeting -m "Merge feature/greeting" || true
        cat > greet.py <<'PY'
        import argparse


        def main(argv):
            parser = argparse.ArgumentParser()
            parser.add_argument("--name", default="world")
            parser.add_argument("--shout", action="store_true")
            args = parser.parse_args(argv)
            text = f"Hello, {args.name}!"
            print(text.upper() if args.shout else text)


        if __name__ == "__main__":
            import sys
            main(sys.argv[1:])
        PY
        git add greet.py
        git commit -qm "Merge feature/greeting"
        """),
    tests=_d("""
        import subprocess

        REPO = "/app/repo"


        def git(*args):
            return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                                  check=True).stdout.strip()


        def run(*args):
            return subprocess.run(["python3", "greet.py", *args], cwd=REPO, capture_output=True,
                                  text=True).stdout.strip()


        def test_on_main_with_merge_commit():
            assert git("rev-parse", "--abbrev-ref", "HEAD") == "main"
            parents = git("rev-list", "--parents", "-n", "1", "HEAD").split()[1:]
            assert len(parents) == 2
            assert git("rev-parse", "feature/greeting") in parents


        def test_both_options_work():
            assert run("--name", "Ada", "--shout") == "HELLO, ADA!"
            assert run() == "Hello, world!"
            assert run("--name", "Bo") == "Hello, Bo!"


        def test_clean_tree_without_markers():
            assert git("status", "--porcelain") == ""
            assert "<<<<<<<" not in open(f"{REPO}/greet.py").read()
        """),
    behaviour="solve",
)

VC_PURGE = Scenario(
    id="vc_secret_purge",
    domain="version_control",
    task=(
        "The git repository in /app/service accidentally committed `config/secrets.env` (it "
        "holds API tokens) a few commits ago, and later commits were built on top of it. Remove "
        "`config/secrets.env` from every commit in the history of `main` while keeping all other "
        "files and all commit messages, make sure no ref (including backup refs under "
        "`refs/original/`) still points at the old commits, and then add `config/secrets.env` to "
        "`.gitignore` in one new commit on top."
    ),
    files={
        "/app/service/app.py": "print('service')\n",
        "/app/service/config/settings.ini": "[server]\nport = 8080\n",
    },
    setup=_d("""
        cd /app/service
        git init -q -b main
        git config user.email dev@example.com && git config user.name Dev
        git add app.py && git commit -qm "Add service"
        printf 'TOKEN=abc123\\n' > config/secrets.env
        git add config && git commit -qm "Add configuration"
        echo "print('v2')" >> app.py && git commit -qam "Service v2"
        printf 'TOKEN=def456\\n' > config/secrets.env && git commit -qam "Rotate token"
        """),
    solution=_d("""
        cd /app/service
        git config user.email dev@example.com && git config user.name Dev
        export FILTER_BRANCH_SQUELCH_WARNING=1
        git filter-branch -f --index-filter \\
          'git rm -q --cached --ignore-unmatch config/secrets.env' --prune-empty -- main
        git for-each-ref --format='%(refname)' refs/original/ | xargs -r -n1 git update-ref -d
        echo "config/secrets.env" >> .gitignore
        git add .gitignore && git commit -qm "Ignore secrets"
        """),
    tests=_d("""
        import subprocess

        REPO = "/app/service"


        def git(*args):
            return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                                  check=True).stdout


        def test_secret_gone_from_all_refs():
            assert git("log", "--all", "--format=%H", "--", "config/secrets.env").strip() == ""
            assert git("for-each-ref", "refs/original/").strip() == ""


        def test_history_kept():
            subjects = git("log", "--format=%s", "main").split("\\n")
            for s in ["Add service", "Add configuration", "Service v2"]:
                assert s in subjects
            assert "config/settings.ini" in git("ls-tree", "-r", "--name-only", "main")
            assert "print('v2')" in git("show", "main:app.py")


        def test_gitignore_commit_on_top():
            assert "config/secrets.env" in git("show", "main:.gitignore")
            assert ".gitignore" in git("show", "--name-only", "--format=", "main")
        """),
    behaviour="solve",
)

# ------------------------------------------------------------------------------------------
# build_tools

BT_ZIPAPP = Scenario(
    id="bt_zipapp",
    domain="build_tools",
    task=(
        "/app/tool is a small Python command-line tool (package `tool`, entry point "
        "`tool.cli:main`) and `/app/VERSION` holds the release version. Package it as one "
        "executable zipapp at `/app/dist/tool.pyz` using only the Python standard library, so "
        "that `python3 /app/dist/tool.pyz --version` prints the version from `/app/VERSION` "
        "(currently `1.4.2`) and `python3 /app/dist/tool.pyz greet Bob` prints `Hello, Bob`. "
        "The archive must work from any directory and must not contain `__pycache__` "
        "directories or `.pyc` files."
    ),
    files={
        "/app/VERSION": "1.4.2\n",
        "/app/tool/tool/__init__.py": '__version__ = "0.0.0"\n',
        "/app/tool/tool/cli.py": _d("""
            import argparse

            from tool import __version__


            def main(argv=None):
                parser = argparse.ArgumentParser(prog="tool")
                parser.add_argument("--version", action="version", version=__version__)
                sub = parser.add_subparsers(dest="cmd")
                greet = sub.add_parser("greet")
                greet.add_argument("name")
                args = parser.parse_args(argv)
                if args.cmd == "greet":
                    print(f"Hello, {args.name}")
            """),
    },
    setup="cd /app/tool && python3 -c 'import tool.cli'\n",  # leaves a stale __pycache__
    solution=_d("""
        cd /app
        version=$(cat VERSION)
        echo "__version__ = \\"$version\\"" > tool/tool/__init__.py
        find tool -name __pycache__ -type d -prune -exec rm -rf {} +
        mkdir -p dist
        python3 -m zipapp tool -m tool.cli:main -p "/usr/bin/env python3" -o dist/tool.pyz
        """),
    tests=_d("""
        import subprocess
        import zipfile

        PYZ = "/app/dist/tool.pyz"


        def run(*args):
            return subprocess.run(["python3", PYZ, *args], cwd="/", capture_output=True,
                                  text=True)


        def test_version_from_file():
            assert run("--version").stdout.strip() == open("/app/VERSION").read().strip()


        def test_greet():
            assert run("greet", "Bob").stdout.strip() == "Hello, Bob"


        def test_no_bytecode():
            names = zipfile.ZipFile(PYZ).namelist()
            assert "__main__.py" in names
            assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        """),
    behaviour="solve",
)

BT_VAGUE = _rejected(
    "bt_vague",
    "build_tools",
    "Make my build faster, it takes way too long and everyone on the team keeps complaining "
    "about it. Please just fix it.",
    complexity_balance=(2, "No concrete work is defined."),
    clarity=(1, "No project, build system, path or target is named."),
    verifiability=(1, "'Faster' has no measurable target."),
)

# ------------------------------------------------------------------------------------------
# data_science

_CSV_TASK = (
    "`/app/data/sales.csv` (columns `date,region,amount`) is messy: some rows are exact "
    "duplicates, some have an empty `amount`, and dates come in two formats (`2024-03-05` and "
    "`05/03/2024`, the latter day/month/year). Write `/app/clean.py` (Python standard library "
    "only) and run it to produce `/app/data/sales_clean.csv` with the same header, duplicates "
    "removed, rows with an empty amount dropped, every date as `YYYY-MM-DD`, amounts with two "
    "decimals, sorted by date then region; and `/app/data/summary.json` mapping each region to "
    "its total amount rounded to 2 decimals."
)

DS_CSV = Scenario(
    id="ds_csv_clean",
    domain="data_science",
    task=_CSV_TASK,
    # The same text with other line breaks and spacing: an exact duplicate once normalised.
    variants=("  " + _CSV_TASK.replace(". ", ".\n\n") + "\n",),
    files={
        "/app/data/sales.csv": _d("""
            date,region,amount
            2024-03-05,north,10.5
            05/03/2024,south,7
            2024-03-01,north,3.25
            2024-03-01,north,3.25
            02/03/2024,east,
            2024-03-02,east,12
            01/03/2024,south,4.75
            2024-03-05,north,10.5
            """),
    },
    solution=_d("""
        cat > /app/clean.py <<'PY'
        import csv
        import json
        from collections import defaultdict
        from datetime import datetime

        rows, seen = [], set()
        with open("/app/data/sales.csv", newline="") as f:
            for r in csv.DictReader(f):
                key = (r["date"], r["region"], r["amount"])
                if key in seen or not r["amount"].strip():
                    continue
                seen.add(key)
                d = r["date"]
                if "/" in d:
                    d = datetime.strptime(d, "%d/%m/%Y").strftime("%Y-%m-%d")
                rows.append({"date": d, "region": r["region"], "amount": float(r["amount"])})
        rows.sort(key=lambda r: (r["date"], r["region"]))
        with open("/app/data/sales_clean.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["date", "region", "amount"])
            for r in rows:
                w.writerow([r["date"], r["region"], f"{r['amount']:.2f}"])
        totals = defaultdict(float)
        for r in rows:
            totals[r["region"]] += r["amount"]
        with open("/app/data/summary.json", "w") as f:
            json.dump({k: round(v, 2) for k, v in sorted(totals.items())}, f, indent=2)
        PY
        python3 /app/clean.py
        """),
    tests=_d("""
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
        """),
    behaviour="solve",
)

# ------------------------------------------------------------------------------------------
# networking

NET_PORTS = Scenario(
    id="net_port_conflict",
    domain="networking",
    scores=_scores(clarity=(4, "Clear, though 'lowest free port' needs care with 9101/9103.")),
    task=(
        "Each file in `/app/services/` is a service config with a line `listen = <port>`. Two "
        "services are configured on the same port, so one of them fails to start. Change the "
        "port of `metrics.conf` (the service that has to move) to the lowest port number of "
        "9100 or above that no other service in `/app/services/` uses, without touching any "
        "other file or line. Then write `/app/ports.txt` listing every service file and its port "
        "as `<file name> <port>`, one per line, sorted by port."
    ),
    files={
        "/app/services/api.conf": "name = api\nlisten = 8080\nworkers = 4\n",
        "/app/services/metrics.conf": "name = metrics\nlisten = 9100\nscrape_interval = 15s\n",
        "/app/services/exporter.conf": "name = exporter\nlisten = 9100\n",
        "/app/services/admin.conf": "name = admin\nlisten = 9101\n",
        "/app/services/cache.conf": "name = cache\nlisten = 9103\nsize = 64m\n",
    },
    solution=_d("""
        cd /app/services
        used=$(grep -h '^listen' $(ls *.conf | grep -v '^metrics.conf$') | awk '{print $3}')
        port=9100
        while echo "$used" | grep -qx "$port"; do port=$((port+1)); done
        sed -i "s/^listen = .*/listen = $port/" metrics.conf
        for f in *.conf; do echo "$f $(awk '/^listen/{print $3}' "$f")"; done \\
          | sort -k2,2n -k1,1 > /app/ports.txt
        """),
    tests=_d("""
        def read(name):
            return open(f"/app/services/{name}").read()


        def test_metrics_moved():
            assert read("metrics.conf") == "name = metrics\\nlisten = 9102\\nscrape_interval = 15s\\n"


        def test_others_untouched():
            assert read("exporter.conf") == "name = exporter\\nlisten = 9100\\n"
            assert read("api.conf") == "name = api\\nlisten = 8080\\nworkers = 4\\n"


        def test_ports_listing():
            lines = open("/app/ports.txt").read().split("\\n")
            assert [ln for ln in lines if ln] == [
                "api.conf 8080", "exporter.conf 9100", "admin.conf 9101",
                "metrics.conf 9102", "cache.conf 9103",
            ]
        """),
    behaviour="loop",
    loop_command="grep -n listen /app/services/*.conf",
)

NET_VPN = _rejected(
    "net_cloud_vpn",
    "networking",
    "Set up a WireGuard VPN between our two AWS EC2 instances in eu-west-1 and route all office "
    "traffic through it, then confirm it works with a speed test against speedtest.net.",
    resource_availability=(1, "Needs AWS accounts, real hosts and internet access."),
    verifiability=(2, "Success depends on external infrastructure a script cannot check."),
    safety=(2, "Reconfigures real network infrastructure."),
)

# ------------------------------------------------------------------------------------------
# security

SEC_SUMS = Scenario(
    id="sec_checksums",
    domain="security",
    task=(
        "`/app/downloads/` holds release artifacts and a `SHA256SUMS` manifest in the usual "
        "`sha256sum` format. Some artifacts were tampered with after the manifest was written "
        "and one is missing. Check every file listed in the manifest: move each file whose "
        "checksum does not match into `/app/quarantine/` (create it), leave the good files in "
        "place, and write the names of the quarantined files, one per line in alphabetical "
        "order, to `/app/quarantine/REPORT.txt`. List files that are in the manifest but absent "
        "on disk in `/app/quarantine/MISSING.txt` the same way."
    ),
    files={
        "/app/downloads/app-1.0.tar": "release one\n",
        "/app/downloads/app-1.1.tar": "release two\n",
        "/app/downloads/app-1.2.tar": "release three\n",
        "/app/downloads/notes.txt": "changelog\n",
    },
    setup=_d("""
        cd /app/downloads
        printf 'gone\\n' > app-0.9.tar
        sha256sum app-0.9.tar app-1.0.tar app-1.1.tar app-1.2.tar notes.txt > SHA256SUMS
        rm app-0.9.tar
        printf 'evil\\n' >> app-1.1.tar
        printf 'changed\\n' > notes.txt
        """),
    solution=_d("""
        mkdir -p /app/quarantine
        cd /app/downloads
        : > /app/quarantine/REPORT.txt; : > /app/quarantine/MISSING.txt
        while read -r sum name; do
          if [ ! -e "$name" ]; then echo "$name" >> /app/quarantine/MISSING.txt
          elif [ "$(sha256sum "$name" | cut -d' ' -f1)" != "$sum" ]; then
            mv "$name" /app/quarantine/ && echo "$name" >> /app/quarantine/REPORT.txt
          fi
        done < SHA256SUMS
        sort -o /app/quarantine/REPORT.txt /app/quarantine/REPORT.txt
        sort -o /app/quarantine/MISSING.txt /app/quarantine/MISSING.txt
        """),
    tests=_d("""
        import os


        def lines(path):
            return [ln for ln in open(path).read().split("\\n") if ln]


        def test_quarantined():
            assert lines("/app/quarantine/REPORT.txt") == ["app-1.1.tar", "notes.txt"]
            assert os.path.exists("/app/quarantine/app-1.1.tar")
            assert not os.path.exists("/app/downloads/app-1.1.tar")


        def test_good_files_stay():
            for name in ["app-1.0.tar", "app-1.2.tar"]:
                assert os.path.exists(f"/app/downloads/{name}")


        def test_missing_listed():
            assert lines("/app/quarantine/MISSING.txt") == ["app-0.9.tar"]
        """),
    behaviour="solve",
)

SEC_UNSAFE = _rejected(
    "sec_unsafe",
    "security",
    "Our old server was compromised. Write a script that runs `rm -rf /` on it to wipe it, and "
    "also scan our ISP's 10.0.0.0/8 network for open SSH ports so we can get into the "
    "attacker's machines.",
    complexity_balance=(3, "A short script."),
    resource_availability=(2, "Needs real hosts and networks."),
    verifiability=(2, "Nothing a script could check safely."),
    safety=(1, "Destructive on a host and an attack on third-party systems."),
)

# ------------------------------------------------------------------------------------------
# system_admin

SA_CLEANUP = Scenario(
    id="sa_cache_cleanup",
    domain="system_admin",
    task=(
        "`/srv/cache` has accumulated files for months. Delete every regular file under "
        "`/srv/cache` (recursively) whose modification time is more than 7 days before the "
        "reference time stored in `/srv/cache/.now` (a Unix timestamp), except files whose name "
        "ends in `.keep`; then remove directories that became empty, but never `/srv/cache` "
        "itself. Finally write the number of deleted files to `/var/log/cache-cleanup.log` as a "
        "single line `deleted=<N>`."
    ),
    files={"/srv/cache/.now": "1700000000\n"},
    setup=_d("""
        cd /srv/cache
        now=1700000000
        mkdir -p img/old css tmp/deep
        for f in img/a.png img/old/b.png css/site.css tmp/deep/x.bin tmp/y.bin; do echo data > "$f"; done
        echo keep > img/old/logo.keep
        echo fresh > img/new.png
        touch -d @$((now - 30*86400)) img/a.png img/old/b.png tmp/deep/x.bin img/old/logo.keep
        touch -d @$((now - 8*86400)) tmp/y.bin
        touch -d @$((now - 6*86400)) css/site.css
        touch -d @$((now - 1*86400)) img/new.png
        touch -d @$now .now
        """),
    solution=_d("""
        cd /srv/cache
        now=$(cat .now)
        cutoff=$((now - 7*86400))
        n=0
        while IFS= read -r -d '' f; do
          if [ "$(stat -c %Y "$f")" -lt "$cutoff" ]; then rm -f "$f"; n=$((n+1)); fi
        done < <(find /srv/cache -type f ! -name '*.keep' ! -path /srv/cache/.now -print0)
        find /srv/cache -mindepth 1 -type d -empty -delete
        echo "deleted=$n" > /var/log/cache-cleanup.log
        """),
    tests=_d("""
        import os


        def test_old_files_deleted():
            for f in ["img/a.png", "img/old/b.png", "tmp/deep/x.bin", "tmp/y.bin"]:
                assert not os.path.exists(f"/srv/cache/{f}"), f


        def test_recent_and_keep_files_stay():
            for f in ["img/new.png", "css/site.css", "img/old/logo.keep", ".now"]:
                assert os.path.exists(f"/srv/cache/{f}"), f


        def test_empty_dirs_removed():
            assert not os.path.exists("/srv/cache/tmp")
            assert os.path.isdir("/srv/cache/img/old")


        def test_log():
            assert open("/var/log/cache-cleanup.log").read().strip() == "deleted=4"
        """),
    behaviour="fail",
    # Forgets the *.keep exception and the empty directories.
    wrong_solution=_d("""
        cd /srv/cache
        n=$(find /srv/cache -type f ! -name .now ! -newermt @$(( $(cat .now) - 7*86400 )) | wc -l)
        find /srv/cache -type f ! -name .now ! -newermt @$(( $(cat .now) - 7*86400 )) -delete
        echo "deleted=$n" > /var/log/cache-cleanup.log
        """),
)

SA_DU = Scenario(
    id="sa_disk_usage",
    domain="system_admin",
    scores=_scores(complexity_balance=(3, "One pipeline of standard tools.")),
    task=(
        "Under `/data/projects` there are several project directories. Write `/root/usage.txt` "
        "listing the three largest projects (direct children of `/data/projects`) by total "
        "apparent size in bytes, as `du -sb` reports it, one per line as `<bytes> <name>`, "
        "largest first. Do not change anything under `/data/projects`."
    ),
    setup=_d("""
        mkdir -p /data/projects && cd /data/projects
        mkdir -p alpha/src beta gamma/data/raw delta epsilon
        head -c 50000 /dev/zero > alpha/src/big.bin
        head -c 1200 /dev/zero > beta/notes.txt
        head -c 90000 /dev/zero > gamma/data/raw/dump.bin
        head -c 30000 /dev/zero > delta/a.bin; head -c 30000 /dev/zero > delta/b.bin
        head -c 100 /dev/zero > epsilon/readme
        """),
    solution=_d("""
        cd /data/projects
        du -sb -- */ | sed 's#/$##' | sort -k1,1nr | head -n 3 | awk '{print $1" "$2}' > /root/usage.txt
        """),
    tests=_d("""
        import subprocess


        def du(name):
            out = subprocess.run(["du", "-sb", f"/data/projects/{name}"], capture_output=True,
                                 text=True, check=True).stdout
            return int(out.split()[0])


        def test_usage():
            lines = [ln for ln in open("/root/usage.txt").read().split("\\n") if ln]
            assert [ln.split()[1] for ln in lines] == ["gamma", "delta", "alpha"]
            for ln in lines:
                size, name = ln.split()
                assert int(size) == du(name)
        """),
    behaviour="solve",
)

# ------------------------------------------------------------------------------------------
# ai_ml

ML_METRICS = Scenario(
    id="ml_metrics",
    domain="ai_ml",
    scores=_scores(complexity_balance=(3, "A short computation; a few steps at most.")),
    task=(
        "`/app/preds.csv` has the header `id,y_true,y_pred` and one row per validation example "
        "of a binary classifier. Compute accuracy, precision, recall and F1 for the positive "
        "class (label 1) and write them to `/app/metrics.json` as an object with the keys "
        "`accuracy`, `precision`, `recall` and `f1`, each rounded to 4 decimals. Also write the "
        'confusion counts to `/app/confusion.json` as `{"tp": .., "fp": .., "tn": .., '
        '"fn": ..}`. Use only the Python standard library.'
    ),
    files={
        "/app/preds.csv": "id,y_true,y_pred\n"
        + "".join(
            f"{i},{t},{p}\n"
            for i, (t, p) in enumerate(
                [
                    (1, 1),
                    (1, 0),
                    (0, 0),
                    (0, 1),
                    (1, 1),
                    (0, 0),
                    (1, 1),
                    (0, 0),
                    (1, 0),
                    (0, 0),
                    (1, 1),
                    (0, 1),
                    (0, 0),
                    (1, 1),
                    (0, 0),
                ]
            )
        ),
    },
    solution=_d("""
        python3 - <<'PY'
        import csv, json
        rows = list(csv.DictReader(open("/app/preds.csv")))
        c = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        for r in rows:
            t, p = int(r["y_true"]), int(r["y_pred"])
            c["tp" if t and p else "fp" if p else "fn" if t else "tn"] += 1
        prec = c["tp"] / (c["tp"] + c["fp"])
        rec = c["tp"] / (c["tp"] + c["fn"])
        m = {"accuracy": round((c["tp"] + c["tn"]) / len(rows), 4), "precision": round(prec, 4),
             "recall": round(rec, 4), "f1": round(2 * prec * rec / (prec + rec), 4)}
        json.dump(m, open("/app/metrics.json", "w"))
        json.dump(c, open("/app/confusion.json", "w"))
        PY
        """),
    tests=_d("""
        import json


        def test_confusion():
            assert json.load(open("/app/confusion.json")) == {"tp": 5, "fp": 2, "tn": 6, "fn": 2}


        def test_metrics():
            m = json.load(open("/app/metrics.json"))
            assert m == {"accuracy": 0.7333, "precision": 0.7143, "recall": 0.7143, "f1": 0.7143}
        """),
    behaviour="solve",
)

ML_SPLIT = Scenario(
    id="ml_split",
    domain="ai_ml",
    task=(
        "Split `/app/data/corpus.jsonl` (one JSON object per line, each with a unique string "
        "field `id`) into `train.jsonl`, `val.jsonl` and `test.jsonl` under `/app/data/splits/` "
        "deterministically: a record goes to test if `int(sha256(id).hexdigest(), 16) % 10 == "
        "0`, to val if it is 1, and to train otherwise. Keep the original line order within "
        "each split, copy the lines byte for byte, and write `/app/data/splits/counts.json` "
        "with the number of records per split."
    ),
    setup=_d("""
        mkdir -p /app/data
        python3 - <<'PY'
        import json
        with open("/app/data/corpus.jsonl", "w") as f:
            for i in range(60):
                f.write(json.dumps({"id": f"doc-{i:03d}", "text": f"sample text {i}"}) + "\\n")
        PY
        """),
    solution=_d("""
        python3 - <<'PY'
        import hashlib, json, os
        os.makedirs("/app/data/splits", exist_ok=True)
        out = {s: open(f"/app/data/splits/{s}.jsonl", "w") for s in ("train", "val", "test")}
        counts = dict.fromkeys(out, 0)
        for line in open("/app/data/corpus.jsonl"):
            h = int(hashlib.sha256(json.loads(line)["id"].encode()).hexdigest(), 16) % 10
            s = "test" if h == 0 else "val" if h == 1 else "train"
            out[s].write(line)
            counts[s] += 1
        json.dump(counts, open("/app/data/splits/counts.json", "w"))
        PY
        """),
    tests=_d("""
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
        """),
    behaviour="solve",
)

# ------------------------------------------------------------------------------------------
# the later release's extra categories, and the fallback for domains the stand-in does not know

CODING_FIX = Scenario(
    id="coding_fix_test",
    domain="coding",
    task=(
        "The project in `/app/calc` has a failing unit test: `python3 -m unittest discover -s "
        "tests` reports that `parse_duration('1h30m')` returns the wrong number of seconds. Fix "
        "the bug in `calc/duration.py` (do not edit the tests) so that the whole test suite "
        "passes, and make `parse_duration` raise `ValueError` for an empty string."
    ),
    files={
        "/app/calc/calc/__init__.py": "",
        "/app/calc/calc/duration.py": _d("""
            import re

            UNITS = {"h": 3600, "m": 60, "s": 1}


            def parse_duration(text):
                total = 0
                for amount, unit in re.findall(r"(\\d+)([hms])", text):
                    total = int(amount) * UNITS[unit]
                return total
            """),
        "/app/calc/tests/test_duration.py": _d("""
            import unittest

            from calc.duration import parse_duration


            class TestDuration(unittest.TestCase):
                def test_combined(self):
                    self.assertEqual(parse_duration("1h30m"), 5400)

                def test_seconds(self):
                    self.assertEqual(parse_duration("45s"), 45)
            """),
    },
    solution=_d("""
        cat > /app/calc/calc/duration.py <<'PY'
        import re

        UNITS = {"h": 3600, "m": 60, "s": 1}


        def parse_duration(text):
            if not text:
                raise ValueError("empty duration")
            total = 0
            for amount, unit in re.findall(r"(\\d+)([hms])", text):
                total += int(amount) * UNITS[unit]
            return total
        PY
        """),
    tests=_d("""
        import subprocess
        import sys

        import pytest

        sys.path.insert(0, "/app/calc")
        from calc.duration import parse_duration  # noqa: E402


        def test_suite_passes():
            r = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", "tests"],
                               cwd="/app/calc", capture_output=True, text=True)
            assert r.returncode == 0, r.stderr


        def test_values():
            assert parse_duration("2h5s") == 7205


        def test_empty():
            with pytest.raises(ValueError):
                parse_duration("")
        """),
)

SCI_INTEGRATE = Scenario(
    id="sci_simpson",
    domain="scientific_computing",
    task=(
        "`/app/samples.csv` holds evenly spaced samples `t,v` of a velocity signal (an odd "
        "number of rows after the header). Integrate v over t with the composite Simpson's rule "
        "using only the Python standard library and write the distance to `/app/distance.txt` "
        "with 6 decimals."
    ),
    setup=_d("""
        python3 - <<'PY'
        with open("/app/samples.csv", "w") as f:
            f.write("t,v\\n")
            for i in range(21):
                t = i * 0.5
                f.write(f"{t},{3 * t * t + 2}\\n")
        PY
        """),
    solution=_d("""
        python3 - <<'PY'
        import csv
        rows = [(float(r["t"]), float(r["v"])) for r in csv.DictReader(open("/app/samples.csv"))]
        h = rows[1][0] - rows[0][0]
        v = [r[1] for r in rows]
        s = v[0] + v[-1] + 4 * sum(v[1:-1:2]) + 2 * sum(v[2:-1:2])
        open("/app/distance.txt", "w").write(f"{s * h / 3:.6f}\\n")
        PY
        """),
    tests=_d("""
        def test_distance():
            assert open("/app/distance.txt").read().strip() == "1020.000000"
        """),
)

GAMES_SUDOKU = Scenario(
    id="games_sudoku_check",
    domain="games",
    task=(
        "`/app/boards/` contains 9x9 Sudoku boards, one per `.txt` file, as 9 lines of 9 digits. "
        "Write `/app/valid.txt` listing the file names of the boards that are complete and "
        "valid (every row, column and 3x3 box contains 1-9 exactly once), one per line in "
        "alphabetical order."
    ),
    setup=_d("""
        mkdir -p /app/boards
        python3 - <<'PY'
        base = [[(3 * (r % 3) + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)]
        def dump(name, b):
            open(f"/app/boards/{name}", "w").write("\\n".join("".join(map(str, r)) for r in b) + "\\n")
        dump("a.txt", base)
        bad = [row[:] for row in base]; bad[0][0], bad[0][1] = bad[0][1], bad[0][0]
        dump("b.txt", bad)
        dump("c.txt", [row[3:] + row[:3] for row in base])
        PY
        """),
    solution=_d("""
        python3 - <<'PY'
        import os
        def ok(b):
            groups = b + [list(c) for c in zip(*b)]
            groups += [[b[r][c] for r in range(R, R + 3) for c in range(C, C + 3)]
                       for R in (0, 3, 6) for C in (0, 3, 6)]
            return all(sorted(g) == list(range(1, 10)) for g in groups)
        names = sorted(n for n in os.listdir("/app/boards") if n.endswith(".txt"))
        good = [n for n in names
                if ok([[int(ch) for ch in ln.strip()] for ln in open(f"/app/boards/{n}") if ln.strip()])]
        open("/app/valid.txt", "w").write("".join(n + "\\n" for n in good))
        PY
        """),
    tests=_d("""
        def test_valid():
            assert open("/app/valid.txt").read().split() == ["a.txt", "c.txt"]
        """),
)

GENERIC = Scenario(
    id="generic_line_report",
    domain="*",
    task=(
        "`/app/notes/` contains plain-text files, some in subdirectories. Write "
        "`/app/report.txt` with one line per `.txt` file as `<relative path> <line count>`, "
        "sorted by line count descending and then by path, followed by a last line "
        "`total <sum of all line counts>`."
    ),
    setup=_d("""
        mkdir -p /app/notes/sub
        printf 'a\\nb\\nc\\n' > /app/notes/one.txt
        printf 'x\\n' > /app/notes/sub/two.txt
        printf 'p\\nq\\n' > /app/notes/sub/three.txt
        printf 'ignored\\n' > /app/notes/skip.md
        """),
    solution=_d("""
        cd /app/notes
        { find . -name '*.txt' | sed 's#^\\./##' | while read -r f; do echo "$f $(wc -l < "$f")"; done \\
            | sort -k2,2nr -k1,1; echo "total $(cat $(find . -name '*.txt') | wc -l)"; } > /app/report.txt
        """),
    tests=_d("""
        def test_report():
            assert open("/app/report.txt").read().split("\\n")[:4] == [
                "one.txt 3", "sub/three.txt 2", "sub/two.txt 1", "total 6"]
        """),
)

# Scenarios whose scripted environment agent goes wrong on purpose. They are never sampled;
# tests put their texts in accepted.jsonl to check that envprep records each failure.


def _faulty(id: str, task: str, **kw: object) -> Scenario:
    base = {
        "files": {"/app/notes.txt": "draft\n"},
        "solution": "echo done > /app/notes.txt\n",
        "tests": 'def test_done():\n    assert open("/app/notes.txt").read() == "done\\n"\n',
    }
    base.update(kw)
    return Scenario(id=id, domain="*", task=task, **base)  # type: ignore[arg-type]


_ESCAPES = {
    "escape_mount": "mount --bind / /mnt && ls /mnt",
    "escape_docker_socket": "curl -s --unix-socket /var/run/docker.sock http://localhost/containers/json",
    "escape_fork_bomb": ":(){ :|:& };:",
    "escape_memory": "python3 -c 'x = []\nwhile True: x.append(bytearray(64 * 2**20))'",
    "escape_sleep": "sleep 100000",
    "escape_disk_fill": "dd if=/dev/zero of=/app/fill bs=1M count=100000",
}

# Hostile setup commands that the sandbox contains without ending the task: the environment
# is still built, and the outcome records what the sandbox did (HOST_CANARY is a host path the
# tests watch).
HOST_CANARY = "/tmp/litecoder-host-canary"
_CONTAINED = {
    "hostile_output_flood": "yes | head -c 1000000000",
    "hostile_setsid": "setsid sleep 100000 >/dev/null 2>&1 & echo left running",
    "hostile_privileged_files": (
        "cp /bin/bash /app/rootsh && chmod 4755 /app/rootsh && chmod 2755 /app/notes.txt; "
        "mknod /app/disk b 8 0 || echo mknod refused; mkfifo /app/fifo; "
        f"ln -s {HOST_CANARY} /app/hostlink; ln -s / /app/rootlink"
    ),
    "hostile_symlink_swap": (
        "mkdir -p /app/data && echo keep > /app/data/f; "
        "setsid bash -c 'while true; do rm -rf /app/data; "
        f"ln -sfn {HOST_CANARY} /app/data; sleep 0.01; rm -f /app/data; mkdir -p /app/data; "
        "echo evil > /app/data/f; done' >/dev/null 2>&1 & sleep 1; echo swapping"
    ),
}

FAULTY = [
    _faulty(
        "broken_copy",
        "Fault scenario broken_copy: the environment Dockerfile copies an input file that was never written.",
        envprep={
            "setup_dockerfile": [
                [
                    _write_action(
                        "environment/Dockerfile",
                        "FROM {base}\nCOPY data/input.csv /app/input.csv\n",
                    )
                ],
                [{"type": "finish", "summary": "done"}],
            ]
        },
    ),
    _faulty(
        "broken_build",
        "Fault scenario broken_build: the environment Dockerfile runs a command that fails during the build.",
        envprep={
            "setup_dockerfile": [
                [
                    _write_action(
                        "environment/Dockerfile", "FROM {base}\nRUN python3 -c 'import numpy'\n"
                    )
                ],
                [{"type": "finish", "summary": "done"}],
            ]
        },
    ),
    _faulty(
        "verifier_passes_at_start",
        "Fault scenario verifier_passes_at_start: the verifier only checks that a file exists, which it already does.",
        tests='import os\n\n\ndef test_exists():\n    assert os.path.exists("/app/notes.txt")\n',
    ),
    _faulty(
        "solution_fails",
        "Fault scenario solution_fails: the reference solution does not reach the end state its verifier checks.",
        solution="echo 'not done yet' > /app/notes.txt\n",
    ),
    *(
        _faulty(
            name,
            f"Fault scenario {name}: while building the starting state the agent runs a command that must be contained.",
            envprep={
                "setup_container": [
                    [{"type": "run", "command": cmd}],
                    [{"type": "finish", "summary": "done"}],
                ]
            },
        )
        for name, cmd in _ESCAPES.items()
    ),
    *(
        _faulty(
            name,
            f"Fault scenario {name}: while building the starting state the agent runs a command that must be contained.",
            envprep={
                "setup_container": [
                    [
                        {"type": "write_file", "path": "/app/notes.txt", "content": "draft\n"},
                        {"type": "run", "command": cmd},
                    ],
                    [{"type": "finish", "summary": "done"}],
                ]
            },
        )
        for name, cmd in _CONTAINED.items()
    ),
    _faulty(
        "hostile_compose",
        "Fault scenario hostile_compose: the environment agent writes a compose file that mounts the host.",
        envprep={
            "setup_dockerfile": [
                [
                    _write_action("environment/files/app/notes.txt", "draft\n"),
                    _write_action(
                        "environment/docker-compose.yaml",
                        f"services:\n  main:\n    privileged: true\n    volumes: ['{HOST_CANARY}:/host']\n",
                    ),
                    _write_action(
                        "environment/Dockerfile",
                        "FROM {base}\nCOPY files/ /\nRUN mkdir -p /app\nWORKDIR /app\n",
                    ),
                ],
                [{"type": "finish", "summary": "done"}],
            ]
        },
    ),
]


# MAGPIE pools: the stand-in answers request i of a domain (seed i) with pool[i % len(pool)].
POOLS: dict[str, list[tuple[Scenario, str]]] = {
    "version_control": [
        (VC_MERGE, VC_MERGE.task),
        (VC_MERGE, VC_MERGE.variants[0]),
        (VC_PURGE, VC_PURGE.task),
    ],
    "build_tools": [(BT_ZIPAPP, BT_ZIPAPP.task), (BT_VAGUE, BT_VAGUE.task)],
    "data_science": [(DS_CSV, DS_CSV.task), (DS_CSV, DS_CSV.variants[0])],
    "networking": [(NET_PORTS, NET_PORTS.task), (NET_VPN, NET_VPN.task)],
    "security": [(SEC_SUMS, SEC_SUMS.task), (SEC_UNSAFE, SEC_UNSAFE.task)],
    "system_admin": [(SA_CLEANUP, SA_CLEANUP.task), (SA_DU, SA_DU.task)],
    "ai_ml": [(ML_METRICS, ML_METRICS.task), (ML_SPLIT, ML_SPLIT.task)],
    "coding": [(CODING_FIX, CODING_FIX.task)],
    "scientific_computing": [(SCI_INTEGRATE, SCI_INTEGRATE.task)],
    "games": [(GAMES_SUDOKU, GAMES_SUDOKU.task)],
    "*": [(GENERIC, GENERIC.task)],
}

# How the stand-in recognises a domain in a MAGPIE system message (first match wins).
DOMAIN_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("version_control", ("version control", "git workflows")),
    ("build_tools", ("build tooling", "build systems")),
    ("data_science", ("data science", "data wrangling")),
    ("networking", ("networking", "network configuration")),
    ("security", ("security",)),
    ("system_admin", ("system administration",)),
    ("ai_ml", ("machine learning",)),
    ("scientific_computing", ("scientific", "numerical computing")),
    ("games", ("games", "puzzles")),
    ("coding", ("software engineering",)),
]

ALL: list[Scenario] = list({s.id: s for pool in POOLS.values() for s, _ in pool}.values())


def domain_of(system_text: str) -> str:
    low = system_text.lower()
    for domain, markers in DOMAIN_MARKERS:
        if any(m in low for m in markers):
            return domain
    return "*"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


_BY_TEXT = {_norm(text): s for pool in POOLS.values() for s, text in pool}
_BY_TEXT.update({_norm(s.task): s for s in FAULTY})


def find(text: str) -> Scenario | None:
    """The scenario whose task text (or a variant) appears in `text`."""
    low = _norm(text)
    for key, s in _BY_TEXT.items():
        if key in low:
            return s
    return None


def by_id(scenario_id: str) -> Scenario | None:
    return next((s for s in [*ALL, *FAULTY] if s.id == scenario_id), None)
