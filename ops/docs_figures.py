"""`python -m ops.docs_figures`: the README's document images, rendered from the worked cases' real output.

docs/final-settlement.png is page 1 of the final settlement PDF of design.md case (h) (Venray, three weeks
without a care worker), built by the same pure function and renderer the budget service uses, from the
registrations and payments of tests/unit/test_final_settlement.py; pypdfium2 (PDFium, a test dependency)
rasterises the PDF. Run it again when the document or its layout changes.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pypdfium2

from services.budget.final_settlement import final_settlement_document
from services.budget.render import final_settlement_pdf
from tests.unit.test_final_settlement import AFTER_END, PAYMENTS, case_h_book, venray

DOCS = Path(__file__).resolve().parent.parent / "docs"


def pdf_page_png(pdf: bytes, path: Path, scale: float = 1.6) -> None:
    """Page 1 as a PNG, cut below the last non-white row (a one-page letter is mostly empty paper)."""
    image = pypdfium2.PdfDocument(pdf)[0].render(scale=scale).to_pil().convert("RGB")
    ink = image.point(lambda v: 255 if v < 250 else 0).convert("L").getbbox()
    bottom = min(image.height, (ink[3] if ink else image.height) + int(30 * scale))
    image.crop((0, 0, image.width, bottom)).save(path)


def main() -> None:
    doc = final_settlement_document("venray-2025", venray(), case_h_book(), PAYMENTS, AFTER_END,
                                    school_name="SBO De Focus")
    path = DOCS / "final-settlement.png"
    pdf_page_png(final_settlement_pdf(doc, "Regio Noord-Limburg"), path)
    print(f"{path} ({dt.date.today().isoformat()}): balance {doc['balance_cents']} cents")


if __name__ == "__main__":
    main()
