"""DICOM in, DICOM SEG out on the page, in a real Chromium: upload a CT series as a zip, click the
tumour, export; the exports list holds a DICOM SEG that references the uploaded series.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pydicom
import pytest
import test_browser_flows as flows
from test_browser import CHROMIUM
from test_browser_orientation import _load_file
from test_dicom_seg import CLICK, write_ct_series, zip_folder

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

# The demo and Chromium once per module, and a page per test, as the flow tests have them.
server = flows.server
browser = flows.browser
page = flows.page


def test_upload_a_dicom_zip_click_and_export_a_seg(page, server, tmp_path: Path):
    from playwright.sync_api import expect

    from app import render

    uids = write_ct_series(tmp_path / "lung2_dicom")
    zipped = zip_folder(tmp_path / "lung2_dicom", tmp_path / "lung2_dicom.zip")
    _load_file(page, zipped)
    expect(page.page.locator("#summary")).to_contain_text("DICOM series, 17 slices")
    z, y, x = CLICK
    flows._move_slider(page, z, 17)
    clicked = page.click_slice(y, x, render.display_factor((256, 256)))
    page.wait_done(z, clicked)
    page.page.locator("#export-btn").click()
    links = page.page.locator("#exports a")
    expect(links.first).to_be_visible(timeout=60_000)
    hrefs = [a.get_attribute("href") for a in links.all()]
    names = [unquote(urlparse(h).path).rsplit("/", 1)[-1] for h in hrefs]
    segs = [h for h, n in zip(hrefs, names, strict=True) if n.endswith("_seg.dcm")]
    assert len(segs) == 1, names
    assert any(n.endswith("_unet_mask.nii.gz") for n in names), names  # beside the NIfTI masks
    seg = pydicom.dcmread(io.BytesIO(page.page.request.get(urljoin(page.page.url, segs[0])).body()))
    assert seg.Modality == "SEG" and seg.SeriesInstanceUID != uids["series"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["SeqPatch", "U-net"]
    assert int(seg.NumberOfFrames) >= 1  # the clicked slice, for each method whose mask is not empty
