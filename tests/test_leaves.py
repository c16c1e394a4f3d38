"""The shared leaves: all-or-nothing writes, the object loader, the thumbnail routine."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from thresher.errors import ThresherError
from thresher.files import atomic_write
from thresher.images import thumbnail_jpeg
from thresher.loading import load_object


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.bin"
    with atomic_write(path) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temporary left
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_load_object_names_the_setting_in_every_error():
    assert load_object("os.path:join", "user_transform").__name__ == "join"
    with pytest.raises(ThresherError, match="^thermal_sensor must be 'module:callable'"):
        load_object("nomodule", "thermal_sensor")
    with pytest.raises(ThresherError, match="^--setup 'no_such_mod:x' cannot be loaded"):
        load_object("no_such_mod:x", "--setup", lambda o: True, "a Setup")
    with pytest.raises(ThresherError, match="^--setup 'os:sep' is not a Setup"):
        load_object("os:sep", "--setup", lambda o: False, "a Setup")
    # A relative module name makes importlib raise TypeError: still one line, not a traceback.
    with pytest.raises(ThresherError, match="^user_transform '.mod:x' cannot be loaded"):
        load_object(".mod:x", "user_transform")


def test_thumbnail_jpeg_is_bounded_and_refuses_what_is_not_an_image(tmp_path):
    Image.new("RGB", (600, 300), (200, 30, 40)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"<html>not an image</html>")
    jpeg = thumbnail_jpeg(tmp_path / "a.png", 128, quality=80)
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (128, 64)
    assert thumbnail_jpeg(tmp_path / "b.jpg", 128, quality=80) is None
    assert thumbnail_jpeg(tmp_path / "missing.jpg", 128, quality=80) is None
