"""Reading a multipart upload into memory, with the size limit enforced while the bytes arrive.

Starlette's own form parser would first spool every file part over 1 MB to a temporary file on disk and only then
hand it to the endpoint; a photo of a patient's skin should never touch the disk, and a 2 GB upload should be
refused after ``limit`` bytes, not after 2 GB. So the endpoint reads the raw body stream and feeds it to
python-multipart's streaming parser, keeping the parts it wants in memory.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 4096  # a text field (age, sex, site) is a few bytes
MAX_PARTS = 32
BODY_OVERHEAD = 64 * 1024  # part headers, boundaries and text fields on top of the file itself


class UploadError(Exception):
    """A request body we will not read further. ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UploadedFile:
    field_name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


def megabytes(n: int) -> str:
    return f"{n / 1_000_000:.3g} MB" if n >= 100_000 else f"{n / 1000:.3g} kB"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    keep: bool = True
    size: int = 0


class _Collector:
    """python-multipart callbacks that keep the wanted parts in memory and check limits as data arrives."""

    def __init__(self, file_fields: set[str], max_file_bytes: int):
        self.file_fields = file_fields
        self.max_file_bytes = max_file_bytes
        self.form = Form()
        self.part = _Part()
        self.parts = 0
        self._header_name = b""
        self._header_value = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(422, f"too many form fields (more than {MAX_PARTS})")
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise UploadError(400, "malformed form: a part has no field name")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
            self.part.content_type = self.part.headers.get(b"content-type", b"").decode("latin-1")
            # Only the file fields we know are kept; other files are counted and dropped.
            self.part.keep = self.part.name in self.file_fields

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        if part.filename is not None:
            if part.keep and part.size > self.max_file_bytes:
                raise UploadError(
                    413, f"the photo is larger than the limit of {megabytes(self.max_file_bytes)}; "
                    "send a smaller or more compressed image (JPEG)"
                )
        elif part.size > MAX_FIELD_BYTES:
            raise UploadError(422, f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")
        if part.keep:
            part.data += data[start:end]

    def on_part_end(self) -> None:
        part = self.part
        if part.filename is None:
            self.form.fields[part.name] = part.data.decode("utf-8", "replace").strip()
        elif part.keep:
            self.form.files[part.name] = UploadedFile(part.name, part.filename, part.content_type, bytes(part.data))
        self.part = _Part()


async def read_form(
    headers, stream: AsyncIterator[bytes], file_fields: set[str], max_file_bytes: int
) -> Form:
    """Parse a ``multipart/form-data`` body from ``stream``, keeping text fields and the files in ``file_fields``.

    Raises :class:`UploadError` (413) as soon as a kept file passes ``max_file_bytes`` or the whole body passes
    ``max_file_bytes + BODY_OVERHEAD`` (checked against Content-Length before reading, and while reading for
    chunked bodies); 415 for a body that is not multipart; 400 for a malformed one.
    """
    content_type = headers.get("content-type", "")
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UploadError(
            415, "send the photo as multipart/form-data in the field 'image' "
            f"(got Content-Type {content_type or 'none'!r})"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "malformed form: multipart Content-Type without a boundary")
    max_body = max_file_bytes + BODY_OVERHEAD
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise UploadError(
            413, f"the upload ({megabytes(int(declared))}) is larger than the limit of {megabytes(max_file_bytes)}"
        )

    collector = _Collector(file_fields, max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_body:
                raise UploadError(413, f"the upload is larger than the limit of {megabytes(max_file_bytes)}")
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise UploadError(400, f"malformed multipart form ({error})") from None
    return collector.form
