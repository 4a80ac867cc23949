"""Output: every file goes through output.write_atomic, nothing half-written, nothing outside."""

import ast
import errno
import json
import os
from pathlib import Path

import pytest

import onnxviz
from builders import Net, save
from onnxviz import output
from onnxviz.cli import main

PACKAGE = Path(onnxviz.__file__).parent


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "maps.png"
    target.write_bytes(b"the picture from before")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(onnxviz.OutputError) as e:
        output.write_atomic(target, b"x" * 100_000)
    assert str(e.value) == f"cannot write '{target}': No space left on device"
    assert _files(tmp_path) == {"maps.png": b"the picture from before"}

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        output.write_atomic(target, b"y" * 100_000)
    assert _files(tmp_path) == {"maps.png": b"the picture from before"}


def test_several_files_are_written_all_or_none(tmp_path, monkeypatch):
    old = tmp_path / "b.png"
    old.write_bytes(b"the b from before")
    calls = []
    real_fsync = os.fsync

    def third_fails(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", third_fails)
    files = {str(tmp_path / name): name.encode() * 1000 for name in ("a.png", "b.png", "c.png")}
    with pytest.raises(onnxviz.OutputError, match="No space left on device"):
        output.write_all(files)
    assert _files(tmp_path) == {"b.png": b"the b from before"}  # a.png was staged, never renamed
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert output.write_all(files) == list(files)
    assert _files(tmp_path) == {name: name.encode() * 1000 for name in ("a.png", "b.png", "c.png")}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        output.write_atomic(tmp_path / "maps.png", b"png")
    finally:
        os.umask(before)
    assert (tmp_path / "maps.png").stat().st_mode & 0o777 == mode


def test_layer_names_cannot_leave_the_output_folder(tmp_path, capsys):
    hostile = {"c1": "../../x", "c2": "a/b", "c3": "/etc/passwd", "c4": "..", "c5": "x", "c6": "é" * 300}
    net = Net((1, 3, 8, 8))
    for k in range(1, 7):
        net.conv(3 if k == 1 else 4, 4, name=f"c{k}"); net.act()
    model = save(net.model(metadata={"onnxviz.layer_names": json.dumps(hostile), "onnxviz.preprocess": "unit"}),
                 tmp_path / "m.onnx")
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    assert main(["filters", str(model), "--layer", "*", "-o", str(out / "f.png")]) == 0
    written = sorted(os.listdir(out))  # 'é' * 300 keeps no safe character: 'layer', made unique
    assert written == ["f_a_b.png", "f_etc_passwd.png", "f_layer.png", "f_layer_2.png", "f_x.png", "f_x_2.png"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(written + ["m.onnx"])
    assert "error" not in capsys.readouterr().err


def test_layer_paths_are_sanitised_and_distinct(tmp_path):
    names = ["../../x", "a/b", "/etc/passwd", "..", ".", "", "x", "a\\b", "\0nul", "é" * 300]
    paths = output.layer_paths(tmp_path / "m.png", names)
    assert len(set(paths.values())) == len(names)
    for p in paths.values():
        assert Path(p).parent == tmp_path and Path(p).name.startswith("m_") and len(Path(p).name) < 140
        assert Path(p).name.replace("m_", "", 1).replace(".png", "")[:1] not in (".", "")


_WRITES = {"write_bytes", "write_text", "mkstemp", "NamedTemporaryFile", "TemporaryFile", "copyfile",
           "copytree", "tofile", "savez", "savez_compressed", "dump", "symlink", "link", "rename"}


def _writing_calls(path: Path) -> list[str]:
    """Calls in ``path`` that could write a file other than through output.write_atomic."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        where = f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}"
        if name in ("open", "fdopen"):
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if owner == "os" or mode is None and name == "fdopen" or mode is not None and not (
                    isinstance(mode, ast.Constant) and not set(str(mode.value)) & set("wax+")):
                found.append(where)
        elif name in _WRITES or (owner in ("os", "shutil") and name in ("replace", "copy", "copy2", "move")) \
                or name in ("save", "savefig", "imsave", "save_all"):
            target = node.args[0] if node.args else None
            if not (name in ("save", "savefig", "imsave", "save_all", "savez") and isinstance(target, ast.Name)
                    and target.id == "buf"):  # an io.BytesIO
                found.append(where)
    return found


def test_no_module_writes_a_file_but_through_write_atomic():
    found = [w for p in sorted(PACKAGE.rglob("*.py")) if p.name != "output.py" for w in _writing_calls(p)]
    assert found == [], "write files through onnxviz.output.write_atomic:\n" + "\n".join(found)
    assert _writing_calls(PACKAGE / "output.py"), "the scan finds output.py's own writes"


def test_every_file_written_is_renamed_into_place(tmp_path, monkeypatch, capsys):
    """demo, filters and features: each file in the output folder arrived by write_atomic's rename."""
    renamed = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        renamed.append((os.path.basename(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    net = Net((1, 3, 16, 16))
    net.conv(3, 4, name="c1"); net.act()
    net.conv(4, 4, name="c2"); net.act()
    model = save(net.model(metadata={"onnxviz.preprocess": "unit"}), tmp_path / "m.onnx")
    image = out / "filters.png"
    assert main(["filters", str(model), "--layer", "*", "-o", str(out / "f.png")]) == 0
    assert main(["features", str(model), str(image), "--layer", "*", "-o", str(out / "fm.png")]) == 0
    capsys.readouterr()
    assert all(src.startswith(".onnxviz-") and src.endswith(".tmp") for src, _ in renamed)
    targets = [os.path.basename(dst) for _, dst in renamed]
    assert len(targets) == len(set(targets)) == len(os.listdir(out)) > 12
    assert set(targets) == set(os.listdir(out))  # every file there was renamed into place, none else
