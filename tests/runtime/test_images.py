import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_onnx import Box, Detection, ImageNotFoundError, InvalidImageError, load_image
from fer_onnx.images import crop_faces, declared_size, decode_image, to_box


def test_accepts_arrays_without_copying() -> None:
    for image in (
        np.zeros((5, 6), np.uint8),
        np.zeros((5, 6, 1), np.uint8),
        np.zeros((5, 6, 3), np.uint8),
        np.zeros((5, 6, 4), np.uint8),
    ):
        assert load_image(image) is image


def test_reads_paths_str_and_pathlib(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "ünïcode face.png"
    cv2.imencode(".png", image)[1].tofile(path)
    np.testing.assert_array_equal(load_image(path), image)
    np.testing.assert_array_equal(load_image(str(path)), image)


def test_reads_pil_images_as_bgr() -> None:
    pil = pytest.importorskip("PIL.Image")
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = load_image(pil.fromarray(rgb))
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [0, 0, 200]
    assert load_image(pil.fromarray(rgb[..., 0])).shape == (4, 4)
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert load_image(pil.fromarray(rgba)).shape == (4, 4, 4)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (None, InvalidImageError, "got None"),
        (np.zeros((0, 0, 3), np.uint8), InvalidImageError, "non-empty"),
        (
            np.zeros((4, 4, 3), np.float32),
            InvalidImageError,
            r"uint8 image, got dtype float32.*astype",
        ),
        (np.zeros((4, 4, 3), np.uint16), InvalidImageError, "uint16"),
        (np.zeros((4,), np.uint8), InvalidImageError, "HxW"),
        (np.zeros((2, 4, 4, 3), np.uint8), InvalidImageError, "classify"),
        (np.zeros((4, 4, 2), np.uint8), InvalidImageError, "HxWx3"),
        (12, InvalidImageError, "got int"),
        ("does/not/exist.jpg", ImageNotFoundError, "not found"),
    ],
)
def test_bad_inputs(image: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_image(image)


def test_missing_file_is_also_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        load_image(Path("nope.png"))


def test_not_an_image_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((10, 10, 20, 20), Box(10, 10, 20, 20)),
        ((-5, -5, 20, 20), Box(0, 0, 15, 15)),
        ((90, 40, 20, 20), Box(90, 40, 10, 10)),
        (np.array([1.4, 2.6, 10, 10]), Box(1, 3, 10, 10)),
        (Box(0, 0, 5, 5), Box(0, 0, 5, 5)),
    ],
)
def test_to_box_clips(box: object, expected: Box) -> None:
    assert to_box(box, 100, 50) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ((1, 2, 3), "expected four numbers"),
        ((0, 0, 0, ""), "expected four numbers"),  # found by hypothesis: was a ValueError
        ((0, 0, None, 5), "expected four numbers"),
        ((0, 0, float("nan"), 5), "expected four numbers"),
        ((0, 0, [1, 2], 5), "expected four numbers"),
        ((0, 0, 10**400, 5), "expected four numbers"),
        (("0", "0", "5", "5"), "expected four numbers"),
        ((0, 0, 0, 5), "positive"),
        ((200, 0, 5, 5), "outside"),
    ],
)
def test_to_box_errors(box: tuple, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match):
        to_box(box, 100, 50)


def test_crop_with_margin_is_clipped() -> None:
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    (crop,) = crop_faces(image, [Box(10, 20, 40, 20)], margin=0.25)
    assert crop.shape == (30, 60)
    (edge,) = crop_faces(image, [Box(0, 0, 40, 40)], margin=0.5)
    assert edge.shape == (60, 60)


# -- the decompression-bomb guard reads each format's header, wherever it is ------------------

BOMB = 30000  # 30000x30000 = 900 megapixels, more than MAX_PIXELS


def _jpeg_after_big_segment(width: int, height: int) -> bytes:
    """A real JPEG whose frame header follows a 65,533-byte APP1 segment, its size patched."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    app1 = b"\xff\xe1" + struct.pack(">H", 65535) + b"\x00" * 65533
    return bytes(data[:2]) + app1 + b"junk\xff\xff" + bytes(data[2:])  # garbage, fill bytes


def _tiff(width: int, height: int, order: str = "<", big: bool = False) -> bytes:
    """A TIFF (or BigTIFF) header whose first directory declares ``width`` x ``height``."""
    tags = [(256, 4, width), (257, 3, height), (258, 3, 8), (273, 4, 200), (279, 4, 10)]
    mark = b"II" if order == "<" else b"MM"
    if big:
        head = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16) + struct.pack(order + "Q", 5)
        entries = [struct.pack(order + "HHQQ", t, k, 1, v) for t, k, v in tags]
    else:
        head = mark + struct.pack(order + "HIH", 42, 8, 5)
        value = {3: "HH", 4: "I"}
        entries = [
            struct.pack(order + "HHI" + value[k], t, k, 1, v, *([0] if k == 3 else []))
            for t, k, v in tags
        ]
    return head + b"".join(entries) + b"\x00" * 64


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


BOMBS = {
    "jpeg, frame header past 64 KB": _jpeg_after_big_segment(BOMB, BOMB),
    "png": b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", BOMB, BOMB, 8, 2, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)),
    "gif": b"GIF89a" + struct.pack("<HHBBB", BOMB, BOMB, 0, 0, 0) + b",\x00\x00\x00\x00;",
    "bmp": b"BM"
    + struct.pack("<IHHI", 0, 0, 0, 54)
    + struct.pack("<IiiHHIIiiII", 40, BOMB, -BOMB, 1, 24, 0, 0, 0, 0, 0, 0),
    "bmp os/2": b"BM"
    + struct.pack("<IHHI", 0, 0, 0, 26)
    + struct.pack("<IHHHH", 12, BOMB, BOMB, 1, 24),
    "tiff": _tiff(BOMB, BOMB),
    "tiff big-endian": _tiff(BOMB, BOMB, ">"),
    "bigtiff": _tiff(BOMB, BOMB, big=True),
    "ppm": b"P6\n# a comment\n30000 30000\n255\n" + b"\x00" * 64,
    "pbm": b"P4 30000\n30000\n" + b"\x00" * 64,
    "pam": b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + b"\x00" * 64,
    "pfm": b"PF\n30000 30000\n-1.0\n" + b"\x00" * 64,
    "sun raster": struct.pack(">8I", 0x59A66A95, BOMB, BOMB, 24, 0, 1, 0, 0),
    "radiance hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n",
    "j2k": b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 47, 0, BOMB, BOMB, 0, 0),
    "jp2 ihdr": b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x16ihdr"
    + struct.pack(">II", BOMB, BOMB),
    "webp vp8x": b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00"
    + (BOMB - 1).to_bytes(3, "little")
    + (BOMB - 1).to_bytes(3, "little"),
    "openexr": b"\x76\x2f\x31\x01\x02\x00\x00\x00dataWindow\x00box2i\x00"
    + struct.pack("<Iiiii", 16, 0, 0, BOMB - 1, BOMB - 1),
}


@pytest.mark.parametrize("data", BOMBS.values(), ids=BOMBS.keys())
def test_bomb_guard_finds_the_declared_size(
    data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert declared_size(data) == (BOMB, BOMB)

    def decoder_reached(*args: object) -> None:
        raise AssertionError("the guard let a 900-megapixel file through to the decoder")

    monkeypatch.setattr("fer_onnx.images.cv2.imdecode", decoder_reached)
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    with pytest.raises(InvalidImageError, match="declares 30000x30000 pixels"):
        load_image(path)


@pytest.mark.parametrize(
    "suffix",
    [
        ".jpg",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pam",
        ".pfm",
        ".sr",
        ".hdr",
        ".jp2",
    ],
)
def test_bomb_guard_reads_real_headers(suffix: str, tmp_path: Path) -> None:
    """Every format the guard knows, as OpenCV writes it: the size it reads is the real one."""
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if suffix in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    elif suffix in (".pgm", ".pbm"):
        image = image[:, :, 0]
    ok, data = cv2.imencode(suffix, image)
    assert ok
    assert declared_size(data.tobytes()) == (53, 37)
    path = tmp_path / f"small{suffix}"
    path.write_bytes(data.tobytes())
    assert load_image(path).shape[:2] == (37, 53)


def test_jpeg_size_past_64_kb_within_limit_still_decodes(tmp_path: Path) -> None:
    path = tmp_path / "exif.jpg"
    path.write_bytes(_jpeg_after_big_segment(16, 16))
    assert declared_size(path.read_bytes()) == (16, 16)
    assert load_image(path).shape == (16, 16, 3)


def test_decode_image_applies_the_guard_to_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes from elsewhere (a URL, base64) pass the same guard as files."""
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    np.testing.assert_array_equal(decode_image(png, "upload"), image)
    with pytest.raises(InvalidImageError, match=r"upload is empty \(0 bytes\)"):
        decode_image(b"", "upload")
    with pytest.raises(InvalidImageError, match="cannot decode upload"):
        decode_image(b"not an image", "upload")
    monkeypatch.setattr("fer_onnx.images.cv2.imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(InvalidImageError, match="upload declares 30000x30000 pixels"):
        decode_image(BOMBS["jpeg, frame header past 64 KB"], "upload")


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"P6" + b"#" * 100_000 + b"\n30000 30000\n255\n", (BOMB, BOMB)),  # one long comment
        (b"P6\n" + b"#\n" * 100_000 + b"30000 30000\n255\n", (BOMB, BOMB)),  # many comments
        (b"P6" + b" " * 100_000 + b"x", None),
        (b"P7\n" + b"\n" * 100_000 + b"WIDTH 30000\nHEIGHT 30000\nENDHDR\n", (BOMB, BOMB)),
        (b"P7\nWIDTH 3x\nHEIGHT 4\nENDHDR\n", None),
        (b"#?RADIANCE\n" + b"A=1\n" * 100_000 + b"\n-Y 30000 +X 30000\n", (BOMB, BOMB)),
        (b"\xff\xd8" + b"\xff" * 100_000, None),
        (b"\xff\xd8" + b"\x00" * 100_000, None),
    ],
)
def test_long_headers_are_read_to_the_end(data: bytes, size: tuple[int, int] | None) -> None:
    """Headers padded far past 64 KB are followed (in linear time: these would hang a
    backtracking parser)."""
    assert declared_size(data) == size


# -- decode_image takes any bytes-like object, and names what else came -------------------------


def test_decode_image_takes_any_bytes_like_object() -> None:
    """memoryview was an AttributeError, np.frombuffer (cv2.imdecode's input) a numpy
    'truth value is ambiguous' ValueError."""
    data = cv2.imencode(".png", np.full((6, 9, 3), 80, np.uint8))[1].tobytes()
    for encoded in (
        data,
        bytearray(data),
        memoryview(data),
        np.frombuffer(data, np.uint8),
        np.repeat(np.frombuffer(data, np.uint8), 2)[::2],  # the same bytes, a strided view
    ):
        assert decode_image(encoded).shape == (6, 9, 3)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (None, "got None"),  # was "the image data is empty (0 bytes)"
        ("abc", "got a str.*load_image"),  # was a raw TypeError
        (Path("photo.jpg"), "load_image"),
        (5, "got int"),
        (np.zeros((4, 4, 3), np.uint8), "decoded image already"),
        (np.zeros(10, np.float32), "dtype float32"),
    ],
)
def test_decode_image_refuses_what_is_not_bytes(data: object, match: str) -> None:
    with pytest.raises(InvalidImageError, match=f"expected the bytes of an image file.*{match}"):
        decode_image(data)  # type: ignore[arg-type]


# -- boxes: numbers of any size are clipped; what is wrong is said -------------------------------


def test_to_box_takes_numbers_of_any_size_and_says_what_is_wrong() -> None:
    """10**30 (an int numpy keeps as an object) was 'expected four numbers'; 1e30 was clipped."""
    assert to_box((0, 0, 1e30, 1e30), 100, 50) == Box(0, 0, 100, 50)
    assert to_box((0, 0, 10**30, 10**30), 100, 50) == Box(0, 0, 100, 50)
    assert to_box((-(10**30), 0, 2 * 10**30, 5), 100, 50) == Box(0, 0, 100, 5)
    assert to_box(Detection(Box(1, 2, 3, 4)), 100, 50) == Box(1, 2, 3, 4)
    with pytest.raises(InvalidImageError, match=r"expected four numbers.*too large"):
        to_box((0, 0, 10**400, 5), 100, 50)
    with pytest.raises(InvalidImageError, match=r"expected four numbers.*inf is not a finite"):
        to_box((0, 0, float("inf"), 5), 100, 50)
    with pytest.raises(InvalidImageError, match=r"expected four numbers.*\(3 values\)"):
        to_box((1, 2, 3), 100, 50)
    with pytest.raises(InvalidImageError, match="outside"):
        to_box((10**30, 0, 5, 5), 100, 50)
    with pytest.raises(InvalidImageError, match="digits"):  # past int's str() limit: no crash
        to_box((0, 0, 10**5000, 5), 100, 50)
