"""The reader's language for documents (design.md section 12): `?lang=nl|en`, else `Accept-Language`, else Dutch.

A route that renders human text or a document takes `lang: str = Depends(document_language)` and passes it to
the service that renders (`&lang=` on its internal view). Figures in JSON are the same in every language.
"""
from __future__ import annotations

from fastapi import Query, Request

from shared.i18n import negotiate


def document_language(request: Request,
                      lang: str | None = Query(default=None, max_length=35, pattern=r"^[A-Za-z_-]+$",
                                               description="nl (default) or en; else Accept-Language decides; "
                                                           "an unknown language gets Dutch")) -> str:
    return negotiate(lang, request.headers.get("accept-language"))
