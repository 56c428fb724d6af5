import errno

import pytest

from casfs import naming
from casfs.errors import InvalidName


@pytest.mark.parametrize(("raw", "code"), [
    (b"", errno.EINVAL), (b".", errno.EINVAL), (b"..", errno.EINVAL),
    (b"a/b", errno.EINVAL), (b"a\0b", errno.EINVAL),
    (b"x" * 256, errno.ENAMETOOLONG), (b"caf\xe9.pdf", errno.EILSEQ),
])
def test_bad_components_are_refused_with_their_errno(raw: bytes, code: int) -> None:
    with pytest.raises(InvalidName) as info:
        naming.check_component(raw)
    assert info.value.errno_hint == code


def test_a_255_byte_utf8_name_is_accepted() -> None:
    name = "é" * 127 + "x"
    assert naming.check_component(name.encode()) == name


@pytest.mark.parametrize(("url", "expected"), [
    ("https://pub.example/a.pdf", "a.pdf"),
    ("https://pub.example/dir/paper%20one.pdf?download=1#page=2", "paper one.pdf"),
    ("https://arxiv.example/pdf/2301.00001v2", "2301.00001v2"),
])
def test_basename_from_url(url: str, expected: str) -> None:
    assert naming.basename_from_url(url) == expected


@pytest.mark.parametrize("url", ["https://pub.example/", "https://pub.example", "http://[::1"])
def test_basename_falls_back_to_the_md5_rule(url: str) -> None:
    name = naming.basename_from_url(url)
    assert name.startswith("artifact_") and name.endswith(".bin") and len(name) == 21


def test_sanitize_removes_separators_and_control_characters() -> None:
    assert naming.sanitize_basename("a/b\\c\x00d\n.pdf") == "a_b_c_d_.pdf"
    assert naming.sanitize_basename("..") is None
    long = naming.sanitize_basename("x" * 300 + ".pdf")
    assert long is not None and long.endswith(".pdf") and len(long.encode()) == 255


@pytest.mark.parametrize("identifier", ["W4415231876", "10.1234/oa.5678", "50%/x", ".", ".."])
def test_directory_names_round_trip(identifier: str) -> None:
    name = naming.dir_name_for(identifier)
    assert "/" not in name and name not in (".", "..")
    assert naming.identifier_for_dir_name(name) == identifier


def test_collision_names_are_deterministic_and_distinct() -> None:
    a = naming.collision_name("paper.pdf", "https://a.example/paper.pdf")
    assert a == naming.collision_name("paper.pdf", "https://a.example/paper.pdf")
    assert a != naming.collision_name("paper.pdf", "https://b.example/paper.pdf")
    assert a.startswith("paper~") and a.endswith(".pdf")
