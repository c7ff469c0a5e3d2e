"""Every parser of outside input is total: any input gives a result or the one
documented refusal, never another exception (a 500, or a crash in a background
task). Hypothesis drives arbitrary and mutated inputs; round trips check that
what we write, we read back. Regression tests for crashes found are at the end.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os

import dag_cbor
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from api.routes_records import parse_range
from daemon import car, crypto, fhir, metadata
from daemon.blocks import Block, FormatError
from daemon.cid import DAG_CBOR, RAW, Cid
from daemon.envelope import NotForUs, build_envelope, envelope_manifest, open_envelope, open_receipt
from daemon.errors import BadRequest, InvalidRecord
from daemon.identity import Principal
from daemon.manifest import SignatureError, build_manifest, decode_link_block, decode_manifest, open_metadata
from daemon.metadata import MetadataError, check_body
from daemon.sharing import parse_share, share_token
from daemon.search_params import encode_cursor, parse as parse_search

settings.register_profile("parsers", max_examples=int(os.environ.get("PARSER_EXAMPLES", 200)), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("parsers")

AUTHOR = Principal.from_seed("author", bytes([1]) * 32)
READER = Principal.from_seed("reader", bytes([2]) * 32)
DEK, SID = bytes(range(32)), bytes(range(16))

# ---- strategies -------------------------------------------------------------

cids = st.builds(lambda codec, digest: Cid(bytes((1, codec, 0x12, 32)) + digest),
                 st.sampled_from([RAW, DAG_CBOR]), st.binary(min_size=32, max_size=32))
ipld = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**64 + 1, max_value=2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=40) | cids.map(Cid.to_link) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


def mutations(data: bytes):
    """The bytes with one byte flipped, a piece cut out, or junk spliced in."""
    n = len(data)
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda t: data[:t[0]] + bytes([data[t[0]] ^ t[1]]) + data[t[0] + 1:])
    cut = st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda t: data[:min(t)] + data[max(t):])
    splice = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0]:])
    return st.one_of(flip, cut, splice)


def _body(**changes) -> dict:
    body = {"record": "a" * 26, "version": 1, "prev": None, "content_type": "text/plain", "size": 2500,
            "patient": None, "type": "Note", "title": "t", "tags": ["x"], "date": "2024-01-01", "subject": None,
            "codes": [], "text": None, "author": AUTHOR.did, "created": "2024-01-01T00:00:00.000Z"}
    return {**body, **changes}


CHUNKS = [Block.raw(crypto.seal_chunk(DEK, SID, i, i == 2, bytes(1024 if i < 2 else 452))) for i in range(3)]
MANIFEST = build_manifest(DEK, SID, 1024, 0, [c.cid for c in CHUNKS], _body(), AUTHOR)
ENVELOPE = build_envelope(MANIFEST.cid, DEK, READER.did, AUTHOR, "2024-01-01T00:00:00.000Z")


def _read_car(pieces: list[bytes]) -> tuple[list[Cid], list[Block]]:
    async def source():
        for piece in pieces:
            yield piece

    async def run():
        roots, blocks = await car.read(source())
        return roots, [b async for b in blocks]

    return asyncio.run(run())


# ---- share tokens -------------------------------------------------------------

@given(st.text(max_size=200) | st.from_regex(r"mv1\.b[a-z2-7]{20,80}\.b[a-z2-7]{20,80}", fullmatch=True))
def test_share_token_parses_or_is_bad_request(token):
    try:
        manifest, envelope = parse_share(token)
    except BadRequest:
        return
    assert share_token(manifest, envelope) == token.lower() or Cid.parse(token.split(".")[1]) == manifest


@given(cids, cids)
def test_share_token_round_trips(manifest, envelope):
    assert parse_share(share_token(manifest, envelope)) == (manifest, envelope)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_share_token_of_another_type_is_bad_request(token):
    with pytest.raises(BadRequest):
        parse_share(token)


# ---- CAR ------------------------------------------------------------------------

GOOD_CAR = car.header([ENVELOPE.cid]) + b"".join(car.frame(b) for b in (ENVELOPE, MANIFEST, *CHUNKS))


@given(st.binary(max_size=300))
def test_car_reader_refuses_arbitrary_bytes_with_format_error(data):
    try:
        _read_car([data])
    except FormatError:
        pass


@given(mutations(GOOD_CAR), st.integers(1, 64))
def test_mutated_car_yields_only_verified_blocks_or_format_error(data, piece):
    try:
        _, blocks = _read_car([data[i:i + piece] for i in range(0, len(data), piece)])
    except FormatError:
        return
    assert all(block.cid.matches(block.data) for block in blocks)


@given(st.lists(st.binary(min_size=1, max_size=200), max_size=5), st.lists(cids, max_size=3),
       st.integers(1, 100))
def test_car_round_trips_in_any_piece_size(payloads, roots, piece):
    blocks = [Block.raw(p) for p in payloads]
    data = car.header(roots) + b"".join(car.frame(b) for b in blocks)
    assert _read_car([data[i:i + piece] for i in range(0, len(data), piece)]) == (roots, blocks)


# ---- manifests, link blocks, envelopes -----------------------------------------

def _decoders(cid: Cid, data: bytes) -> None:
    """Every decoder of a block from outside, as a node would run them."""
    for run in (
        lambda: open_metadata(decode_manifest(cid, data), DEK),
        lambda: decode_link_block(cid, data),
        lambda: envelope_manifest(cid, data),
        lambda: open_envelope(cid, data, READER),
        lambda: open_receipt(cid, data, AUTHOR),
    ):
        try:
            run()
        except (FormatError, SignatureError, NotForUs, crypto.DecryptError):
            pass


@given(st.binary(max_size=400))
def test_decoders_refuse_arbitrary_bytes(data):
    _decoders(Cid.for_data(DAG_CBOR, data), data)


@given(ipld)
def test_decoders_refuse_arbitrary_dag_cbor(value):
    data = dag_cbor.encode(value)
    _decoders(Cid.for_data(DAG_CBOR, data), data)


@given(mutations(MANIFEST.data) | mutations(ENVELOPE.data))
def test_decoders_refuse_mutated_blocks(data):
    _decoders(Cid.for_data(DAG_CBOR, data), data)


@settings(max_examples=100)
@given(st.sampled_from(sorted({"v", "sid", "cs", "depth", "links", "meta"})), ipld)
def test_manifest_field_of_any_value_decodes_or_is_refused(key, value):
    node = {**dag_cbor.decode(MANIFEST.data), key: value}
    block = Block.dag_cbor(node)
    _decoders(block.cid, block.data)


def test_manifest_and_envelope_round_trip():
    assert open_metadata(decode_manifest(MANIFEST.cid, MANIFEST.data), DEK) == _body()
    grant = open_envelope(ENVELOPE.cid, ENVELOPE.data, READER)
    assert (grant.manifest, grant.dek, grant.granter) == (MANIFEST.cid, DEK, AUTHOR.did)
    assert open_receipt(ENVELOPE.cid, ENVELOPE.data, AUTHOR).recipient == READER.did


# ---- signed metadata --------------------------------------------------------------

@given(st.sampled_from(sorted(metadata.FIELDS)), ipld)
def test_metadata_field_of_any_value_passes_or_names_that_field(key, value):
    try:
        check_body(_body(**{key: value}), 1024, 0, 3, 4096)
    except MetadataError as exc:
        # A version past 1 needs a prev, so a valid version may be refused at body.prev.
        related = {"version": "body.prev"}.get(key)
        assert exc.path in ("body", "body.size", related) or exc.path.startswith(f"body.{key}")


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=12), ipld, max_size=8))
def test_metadata_of_any_shape_is_refused_with_metadata_error(body):
    with pytest.raises(MetadataError):
        check_body(body, 1024, 0, 3, 4096)


@given(st.integers(1, 3000), st.integers(1, 4096), st.integers(2, 64), st.integers(0, 4095))
def test_every_tree_the_writer_builds_passes_the_size_check(count, chunk_size, fanout, short):
    """Writer within reader: any chunk count and fanout (nodes may lower it to test deep trees)."""
    from daemon.manifest import build_link_tree
    size = count * chunk_size - min(short, chunk_size - 1)
    depth, top, _ = build_link_tree([Cid.for_data(RAW, i.to_bytes(4, "big")) for i in range(count)], fanout)
    assume(depth <= 4)
    check_body(_body(size=size), chunk_size, depth, len(top), 4096)


@given(st.integers(1, 3000), st.integers(1, 3000))
def test_a_depth_0_manifest_must_list_exactly_the_chunks_its_size_needs(links, chunks):
    try:
        check_body(_body(size=chunks * 1024), 1024, 0, links, 4096)
        assert links == chunks
    except MetadataError as exc:
        assert links != chunks and exc.path == "body.size"


@given(st.sampled_from([None, "Observation"]) | st.text(max_size=20), st.none() | st.text(max_size=30),
       st.lists(st.sampled_from(["a", "lab"]) | st.text(max_size=8), max_size=4),
       st.sampled_from([None, "2024-05-01"]) | st.text(max_size=12),
       st.sampled_from(["text/plain", "application/fhir+json; fhirVersion=4.0"])
       | st.text(max_size=40).map(lambda t: "text/plain;" + t))
def test_what_the_upload_path_accepts_the_reader_accepts(type_, title, tags, date, content_type):
    """Writer within reader: a record input the API takes must give a body the
    strict reader opens, or the node would store a record it cannot read."""
    from daemon.errors import UnsupportedMediaType
    from daemon.record_input import RecordInput, check_media_type
    try:
        info = RecordInput(type=type_, title=title, tags=tags, date=date).validated()
        full_type, _ = check_media_type(content_type)
    except (BadRequest, UnsupportedMediaType):
        return
    check_body(_body(type=info.type, title=info.title, tags=info.tags, date=info.date, content_type=full_type),
               1024, 0, 3, 4096)


# ---- Range headers and cursors ---------------------------------------------------------

@given(st.one_of(st.none(), st.text(max_size=40), st.from_regex(r"bytes=[0-9]{0,25}-[0-9]{0,25}", fullmatch=True)),
       st.integers(0, 2**53))
def test_range_is_whole_body_a_valid_span_or_416(header, size):
    try:
        span = parse_range(header, size)
    except ValueError:
        return
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size


@given(st.integers(1, 10**6), st.data())
def test_range_round_trips(size, data):
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start, size - 1))
    assert parse_range(f"bytes={start}-{end}", size) == (start, end)


def _cursor(text: str, sort: str | None = None):
    items = [("cursor", text)] + ([("_sort", sort)] if sort else [])
    return parse_search(items, READER.did, "2024-01-01T00:00:00.000Z", False).after


@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_cursor_is_a_position_or_bad_request(cursor):
    try:
        position = _cursor(cursor)
    except BadRequest:
        return
    assert 0 <= position["s"] < 2**63


@given(ipld.filter(lambda v: not isinstance(v, (bytes, float)) and "CID" not in repr(v)),
       st.sampled_from([None, "date", "-date"]))
def test_cursor_of_any_json_is_a_bindable_position_or_bad_request(value, sort):
    """Whatever a cursor holds, SQLite must be able to bind it (64-bit integers)."""
    doc = {"s": value, "o": sort or "-seq"} if not isinstance(value, dict) else {**value, "o": sort or "-seq"}
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        position = _cursor(base64.urlsafe_b64encode(text.encode()).decode().rstrip("="), sort)
    except BadRequest:
        return
    assert all(v is None or (type(v) is int and -2**63 <= v < 2**63) for v in position.values())


@given(st.integers(-2**70, 2**70), st.integers(-2**70, 2**70))
def test_cursor_positions_are_bounded(seq, day):
    text = json.dumps({"s": seq, "d": day, "o": "-seq"})
    try:
        position = _cursor(base64.urlsafe_b64encode(text.encode()).decode())
    except BadRequest:
        assert not (0 <= seq < 2**63 and -2**63 <= day < 2**63)
        return
    assert position == {"s": seq, "d": day} and -2**63 <= day < 2**63


@given(st.integers(0, 2**63 - 1), st.none() | st.integers(-2**62, 2**62), st.sampled_from(["date", "-date"]))
def test_cursor_round_trips(seq, day, sort):
    position = {"s": seq, "d": day}
    assert _cursor(encode_cursor(position, sort), sort) == position


# ---- FHIR summary -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "subject", "reference", "code", "coding", "system", "display", "text",
                         "div", "effectiveDateTime", "period", "start", "category", "identifier", "value",
                         "component", "x"]), inner, max_size=5),
    max_leaves=25)
resources = st.fixed_dictionaries({"resourceType": st.sampled_from(["Observation", "Condition", "x"])},
                                  optional={"subject": json_values, "code": json_values, "text": json_values,
                                            "effectiveDateTime": json_values, "period": json_values,
                                            "category": json_values, "identifier": json_values,
                                            "component": json_values})


def _fits_the_metadata_schema(summary: fhir.FhirSummary) -> None:
    """What the summary gives the vault must pass the reader's schema."""
    body = _body(subject=summary.subject, date=summary.date, codes=[list(c) for c in summary.codes],
                 identifiers=[list(i) for i in summary.identifiers], text=summary.text, type=summary.resource_type)
    check_body(body, 1024, 0, 3, 4096)


@given(st.binary(max_size=200))
def test_fhir_summary_of_any_bytes_is_a_summary_or_invalid_record(body):
    try:
        _fits_the_metadata_schema(fhir.summarize(body))
    except InvalidRecord:
        pass


@given(resources | json_values)
def test_fhir_summary_of_any_json_fits_the_metadata_schema(resource):
    try:
        _fits_the_metadata_schema(fhir.summarize(json.dumps(resource).encode()))
    except InvalidRecord:
        pass


# ---- regressions: crashes the fuzzers found -----------------------------------------------

def test_car_with_non_minimal_varint_is_a_format_error():
    """varint.decode raised a bare ValueError: the importer turned it into a 500."""
    with pytest.raises(FormatError):
        _read_car([car.header([]) + b"\x80\x00"])


@pytest.mark.parametrize("body", [b"[" * 100_000, b"{\"resourceType\": \"Observation\", \"x\": " + b"9" * 5000 + b"}"])
def test_fhir_summary_of_deep_or_huge_json_is_invalid_record(body):
    """RecursionError and int's digit limit escaped json.loads' JSONDecodeError."""
    with pytest.raises(InvalidRecord):
        fhir.summarize(body)


def test_fhir_summary_keeps_only_valid_dates_and_refuses_nul():
    """An invalid date or a NUL went into signed metadata that no reader would then accept."""
    summary = fhir.summarize(json.dumps({"resourceType": "Observation", "effectiveDateTime": "yesterday",
                                         "issued": "2024-05-01T10:00:00Z"}).encode())
    assert summary.date == "2024-05-01T10:00:00Z"
    with pytest.raises(InvalidRecord):
        fhir.summarize(json.dumps({"resourceType": "Observation", "code": {"text": "a\x00b"}}).encode())


def test_fhir_summary_keeps_at_most_the_schema_s_codes():
    codes = [{"system": "s", "code": str(i)} for i in range(metadata.MAX_CODES + 5)]
    summary = fhir.summarize(json.dumps({"resourceType": "Observation", "code": {"coding": codes}}).encode())
    assert len(summary.codes) == metadata.MAX_CODES


@pytest.mark.parametrize("doc", ['{"s": 1e400, "o": "-seq"}', '{"s": true, "o": "-seq"}',
                                 '{"s": 99999999999999999999999, "o": "-seq"}',
                                 '{"s": 1, "d": 99999999999999999999999, "o": "-seq"}', "[" * 5000 + "]" * 5000])
def test_cursor_with_a_huge_odd_or_deep_value_is_bad_request(doc):
    """A huge number overflowed SQLite's integer (a 500); True passed as 1."""
    with pytest.raises(BadRequest):
        _cursor(base64.urlsafe_b64encode(doc.encode()).decode())


def test_metadata_holding_bytes_is_refused_not_a_type_error():
    """canonical_json raised TypeError on a bytes value before the signature check."""
    from daemon.manifest import _signing_input  # noqa: F401  (the path that raised)
    sealed = crypto.seal_metadata(DEK, SID, dag_cbor.encode({"body": _body(title=b"x"), "sig": bytes(64)}))
    block = Block.dag_cbor({**dag_cbor.decode(MANIFEST.data), "meta": sealed})
    with pytest.raises(MetadataError):
        open_metadata(decode_manifest(block.cid, block.data), DEK)


def test_range_with_thousands_of_digits_is_served_not_refused():
    """int() refuses more than 4300 digits: an open-ended range from 0 was a 416."""
    assert parse_range("bytes=0-" + "9" * 5000, 10) == (0, 9)
    assert parse_range("bytes=" + "0" * 5000 + "-3", 10) == (0, 3)
    with pytest.raises(ValueError):
        parse_range("bytes=" + "9" * 5000 + "-", 10)


async def test_upload_with_nul_in_title_is_400_and_later_records_stay_readable(api):
    """A NUL title was accepted and signed; the strict reader then refused the
    node's own record. It is now refused at the door."""
    resp = await api.client.post("/v1/records", data=b"x", params={"title": "a\x00b"},
                                 headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_title"
    record = await api.put(b"hello", "text/plain", title="fine")
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert resp.status == 200 and await resp.read() == b"hello"
