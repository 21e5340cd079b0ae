"""Certificates: issued once per learner and course on completion, each with a random
serial (``XXXX-XXXX-XXXX-XXXX``, 80 bits) that the public route verifies without a
login, rendered as a PDF with fpdf2, revocable by staff."""

from __future__ import annotations

import datetime as dt
import secrets

import asyncpg
from fpdf import FPDF

from sidecars.courses import store
from sidecars.courses.wire import Certificate

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I: a serial is read aloud and typed by hand."""


def new_serial() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def verify_url(serial: str) -> str:
    return f"/api/v1/certificates/{serial}"


async def issue(conn: asyncpg.Connection, course_row: asyncpg.Record, user_id: int) -> str:
    """The learner's certificate of the course (issued now, or the one they have)."""
    name = await store.display_name(conn, user_id)
    serial = await conn.fetchval(
        "INSERT INTO certificates (serial, course_id, community_id, user_id,"
        " learner_name, course_title) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (course_id, user_id) DO UPDATE SET serial = certificates.serial"
        " RETURNING serial", new_serial(), course_row["id"], course_row["community_id"],
        user_id, name, course_row["title"])
    return str(serial)


def certificate_of(r: asyncpg.Record) -> Certificate:
    return Certificate(serial=r["serial"], course_id=r["course_id"],
                       community_id=r["community_id"], user_id=r["user_id"],
                       learner_name=r["learner_name"], course_title=r["course_title"],
                       issued_at=store.ms0(r["issued_at"]), valid=r["revoked_at"] is None,
                       revoked_at=store.ms(r["revoked_at"]),
                       revoked_reason=r["revoked_reason"], verify_url=verify_url(r["serial"]))


async def by_serial(conn: asyncpg.Connection, serial: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM certificates WHERE serial = $1", serial)


async def of_learner(conn: asyncpg.Connection, course_id: int,
                     user_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM certificates WHERE course_id = $1 AND user_id = $2", course_id, user_id)


async def revoke(conn: asyncpg.Connection, community_id: int, serial: str,
                 reason: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE certificates SET revoked_at = coalesce(revoked_at, now()),"
        " revoked_reason = $3 WHERE serial = $1 AND community_id = $2 RETURNING *",
        serial, community_id, reason)


def _latin1(text: str) -> str:
    """fpdf2's built-in fonts are Latin-1: other characters print as '?' (a Unicode
    TTF would need a font file shipped with Hearth)."""
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(cert: Certificate, community_name: str) -> bytes:
    """A one-page landscape A4 certificate."""
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_title(_latin1(f"Certificate {cert.serial}"))
    pdf.set_creator("Hearth")
    pdf.add_page()
    pdf.set_draw_color(120, 80, 40)
    pdf.set_line_width(1.5)
    pdf.rect(10, 10, 277, 190)
    issued = dt.datetime.fromtimestamp(cert.issued_at / 1000, dt.UTC).strftime("%d %B %Y")
    lines: list[tuple[str, int, str]] = [
        ("B", 30, "Certificate of Completion"),
        ("", 14, "This certifies that"),
        ("B", 24, cert.learner_name),
        ("", 14, "has completed the course"),
        ("B", 20, cert.course_title),
        ("", 12, f"{community_name} - {issued}"),
        ("", 10, f"Serial {cert.serial} - verify at {cert.verify_url}"),
    ]
    pdf.set_y(35)
    for style, size, text in lines:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, size * 0.6, _latin1(text), align="C")
        pdf.ln(size * 0.35)
    if not cert.valid:
        pdf.set_text_color(180, 0, 0)
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, "REVOKED", align="C")
    return bytes(pdf.output())
