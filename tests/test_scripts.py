"""``scripts/test-services``: what ``make test`` needs on a fresh machine, installed when missing."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-services"

#: A stand-in for apt-get: logs its arguments and "installs" each package by creating its commands.
APT_GET = """#!{bash}
echo "$@" >> "{log}"
for package in "$@"; do
  case "$package" in
    redis-server)
      for command in redis-server redis-cli; do
        printf '#!{bash}\\nexit 0\\n' > "{bin}/$command"; chmod +x "{bin}/$command"
      done ;;
  esac
done
"""


def test_a_machine_without_redis_gets_it_installed_before_it_is_started(tmp_path):
    """A fresh machine has no Redis: the script installs Debian's redis-server (which brings
    redis-cli), as it installs Chromium, instead of failing on a missing command."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt-get.log"
    bin_dir.mkdir()
    bash = "/bin/bash"
    for tool in ("bash", "chmod", "mkdir", "seq", "sleep"):  # only these: the machine's own Redis stays out of sight
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    for tool in ("chromium", "chromedriver"):  # present: only Redis is missing
        (bin_dir / tool).write_text(f"#!{bash}\nexit 0\n")
    (bin_dir / "apt-get").write_text(APT_GET.format(bash=bash, log=log, bin=bin_dir))
    for path in bin_dir.iterdir():
        if not path.is_symlink():
            path.chmod(0o755)

    done = subprocess.run(
        [bash, str(SCRIPT)], env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stdout + done.stderr
    installs = [line for line in log.read_text().splitlines() if line.split()[:1] == ["install"]]
    assert any("redis-server" in line.split() for line in installs), installs
