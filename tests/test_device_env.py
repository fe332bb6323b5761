"""scripts/device_env.sh: what each device call carries lands under $DEVICE_TMP, and the dataset's
parts join into an archive only when its SHA-256 checks."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from greenlib.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "device_env.sh"
ARCHIVE = "cifar100-png.tar.xz"


def _call(checkout: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """One device call: a fresh checkout folder sources the script (``args`` after its name)."""
    cmd = f'source "{SCRIPT}" {" ".join(args)}; rc=$?; echo "GREENLIB_DATA=$GREENLIB_DATA"; exit $rc'
    env = {"PATH": "/usr/bin:/bin", "DEVICE_TMP": str(tmp), "OUT": str(tmp / "out")}
    return subprocess.run(["bash", "-c", cmd], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)


def _split(data: bytes, checkout_root: Path, sizes: list[int]) -> list[Path]:
    """The archive's parts in one carried folder each (.pa1, .pa2, ...), SHA256SUMS with the last."""
    folders, start = [], 0
    for i, n in enumerate(sizes):
        d = checkout_root / f"call{i}" / f".pa{i + 1}"
        d.mkdir(parents=True)
        (d / f"c100.part.a{'abcdefg'[i]}").write_bytes(data[start:start + n])
        start += n
        folders.append(d.parent)
    (folders[-1] / f".pa{len(sizes)}" / "SHA256SUMS").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {ARCHIVE}\n0000  other.tar.xz\n")
    return folders


def test_parts_carried_over_three_calls_join_into_the_checked_archive(tmp_path):
    data = bytes(range(256)) * 400
    calls = _split(data, tmp_path / "checkouts", [40_000, 40_000, 22_400])
    device = tmp_path / "device"
    for c in calls[:-1]:
        r = _call(c, device)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"GREENLIB_DATA={device}/greenlib" in r.stdout
    r = _call(calls[-1], device, "join")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{ARCHIVE}: OK" in r.stdout
    assert (device / "c100" / ARCHIVE).read_bytes() == data
    assert not list((device / "c100").glob("c100.part.*"))  # the parts go once the archive checks
    # a later call (the archive already there) joins nothing and still says OK
    r = _call(calls[0], device, "join")
    assert r.returncode == 0 and (device / "c100" / ARCHIVE).read_bytes() == data


def test_a_missing_part_fails_the_join_with_one_line_and_keeps_the_parts(tmp_path):
    data = b"x" * 1000 + b"y" * 1000
    calls = _split(data, tmp_path / "checkouts", [1000, 1000])
    device = tmp_path / "device"
    r = _call(calls[-1], device, "join")  # the first call's part never arrived (a replaced machine)
    assert r.returncode == 3
    errors = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "c100.part.ab" in errors[0] and "SHA-256" in errors[0]
    assert not (device / "c100" / ARCHIVE).exists()
    assert (device / "c100" / "c100.part.ab").exists()  # carrying the missing part then joins
    r = _call(calls[0], device, "join")
    assert r.returncode == 0 and (device / "c100" / ARCHIVE).read_bytes() == data


def test_no_parts_at_all_is_a_one_line_error(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    r = _call(checkout, tmp_path / "device", "join")
    assert r.returncode == 3 and r.stdout.splitlines()[0].startswith("error: no parts c100.part.*")


def test_a_carry_folder_lands_under_its_own_name(tmp_path):
    checkout = tmp_path / "checkout"
    for name, payload in ((".cr2", b"chunk of session 3"), (".cr3", b"chunk of session 4")):
        (checkout / name).mkdir(parents=True)
        (checkout / name / "carry.tar.000").write_bytes(payload)
    r = _call(checkout, tmp_path / "device")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "device" / "carry" / ".cr2" / "carry.tar.000").read_bytes() == b"chunk of session 3"
    assert (tmp_path / "device" / "carry" / ".cr3" / "carry.tar.000").read_bytes() == b"chunk of session 4"


def test_a_carry_split_over_calls_joins_its_first_folder(tmp_path):
    device = tmp_path / "device"
    for i, name in enumerate((".cr6", ".cr6+2", ".cr6+3")):
        checkout = tmp_path / f"call{i}"
        (checkout / name).mkdir(parents=True)
        (checkout / name / f"carry.tar.00{i}").write_bytes(f"chunk {i}".encode())
        r = _call(checkout, device)
        assert r.returncode == 0 and f"carried {name} -> {device}/carry/.cr6" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in (device / "carry").iterdir()) == [".cr6"]
    assert [(device / "carry" / ".cr6" / f"carry.tar.00{i}").read_bytes() for i in range(3)] == [
        b"chunk 0", b"chunk 1", b"chunk 2"]
