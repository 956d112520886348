"""report.html in a real browser: headless Chromium renders it, runs its script, draws pixels."""

import shutil
import struct
import subprocess
import zlib

import pytest

from infergate.report.document import write_reports
from tests.test_report import sample_document

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")


def chromium(*args, timeout=120):
    result = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                             "--hide-scrollbars", "--window-size=1400,1000", *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_rows(data: bytes) -> tuple[int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) to (bytes per pixel, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth=} {colour=}"
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                      (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + (0, left, up, (left + up) // 2,
                                  _paeth(left, up, corner))[kind]) & 0xFF
        rows.append(bytes(line))
        prev = line
    return bpp, rows


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    return write_reports(out, sample_document())["report.html"]


def test_dom_after_scripts_has_matrix_cells_and_charts(page):
    dom = chromium("--dump-dom", page.as_uri())
    assert 'data-ready="1"' in dom  # the page's script ran to its end
    matrix = dom[dom.index('id="matrix"'):dom.index('id="chart-accuracy"')]
    for combination in ("mlp-torch-fp32", "mlp-ort_cpu-int8", "gru-openvino-bf16"):
        assert f'data-id="{combination}"' in matrix
    for chart in ("chart-accuracy", "chart-latency", "chart-memory"):
        assert f'<svg id="{chart}"' in dom
    assert "<script>alert(1)</script>" not in dom


def test_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", page.as_uri())
    bpp, rows = png_rows(shot.read_bytes())
    pixels = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), bpp * 7)}
    assert len(rows) == 1000
    # The header band, coloured cells and text: far more than a blank page's one colour.
    assert len(pixels) > 20, f"only {len(pixels)} colours: the page rendered blank"
