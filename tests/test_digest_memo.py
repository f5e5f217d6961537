import os

from pywasmd import cache
from pywasmd.cache import module_digest, remembered_digest


def _memos(root):
    d = root / "digests"
    return sorted(p for p in os.listdir(d) if not p.startswith(".tmp-")) if d.exists() else []


def test_second_lookup_reads_the_memo_not_the_module(tmp_path, monkeypatch):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\1\0\0\0" + os.urandom(300_000))
    root = tmp_path / "cache"
    first = remembered_digest(str(module), str(root))
    assert first == module_digest(str(module))
    assert len(_memos(root)) == 1
    calls = []
    monkeypatch.setattr(cache, "module_digest", lambda p: calls.append(p) or "x")
    assert remembered_digest(str(module), str(root)) == first
    assert calls == []


def test_a_rewritten_module_is_hashed_again(tmp_path):
    module = tmp_path / "m.wasm"
    root = tmp_path / "cache"
    module.write_bytes(b"\0asm\1\0\0\0" + b"a" * 1000)
    one = remembered_digest(str(module), str(root))
    module.write_bytes(b"\0asm\1\0\0\0" + b"b" * 1000)
    two = remembered_digest(str(module), str(root))
    assert one != two
    assert two == module_digest(str(module))


def test_a_corrupt_memo_falls_back_to_hashing(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\1\0\0\0" + b"c" * 1000)
    root = tmp_path / "cache"
    good = remembered_digest(str(module), str(root))
    (memo,) = _memos(root)
    (root / "digests" / memo).write_text("not a digest")
    assert remembered_digest(str(module), str(root)) == good


def test_an_unwritable_cache_still_gives_the_digest(tmp_path):
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm\1\0\0\0")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    assert remembered_digest(str(module), str(blocker)) == module_digest(str(module))


def test_memos_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_MAX_DIGESTS", 4)
    root = tmp_path / "cache"
    for i in range(9):
        module = tmp_path / f"m{i}.wasm"
        module.write_bytes(b"\0asm\1\0\0\0" + bytes([i]))
        remembered_digest(str(module), str(root))
    assert len(_memos(root)) <= 5
