"""Search over the records a caller can read, planned from the smallest set.

Access is the one rule (``records.LIVE_ENVELOPE``: a live envelope naming
the record's current manifest), checked per candidate row by an index
lookup. What differs between queries is where candidates come from:

- **set**: when some source is small (the caller's own envelopes, one
  code, tag, reference or identifier, a type, a full-text match, a date
  window), its rows are gathered first and only they are checked and
  sorted. Sizes are estimated with bounded counts (``LIMIT LARGE``), which
  cost at most LARGE index steps each. A source of up to LARGE rows is
  gathered too, unless walking it in order needs no other filter.
- **walk**: when every source is large, the records are walked in result
  order (newest first by ``seq``, or by date) along one filter's
  ``(value, seq)`` index when there is one, and the first page that passes
  every filter is returned: with large sets that page comes quickly.

``plan`` returns the chosen SQL so a test can ``EXPLAIN QUERY PLAN`` it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import dates
from .records import LIVE_ENVELOPE, row_of
from .sql import sqlite3

SMALL = 500  # a source this small (or smaller) is always gathered and sorted
LARGE = 5000  # up to this, gathering beats walking unless the walk needs no other filter
_WIDE_MS = 24 * 3600 * 1000  # date ranges longer than a day are found through the records_wide index
# Every column a candidate's checks read (access, type, dates, keyset) is in
# this narrow index (schema m006), so a candidate costs one entry among many
# on a page rather than a random read of its wide record row.
_PROBE = "records r INDEXED BY records_probe"


@dataclass(frozen=True)
class Term:
    """One token to match: ``system`` None matches any system."""

    value: str
    system: str | None = None


@dataclass
class Query:
    caller: str
    now: str
    emergency: bool = False
    refs: list[list[Term]] = field(default_factory=list)  # AND of OR-groups: patient/subject references
    types: list[list[str]] = field(default_factory=list)
    tags: list[list[Term]] = field(default_factory=list)
    codes: list[list[Term]] = field(default_factory=list)
    identifiers: list[list[Term]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)  # (prefix, lo, hi)
    text: str | None = None
    sort: str = "-seq"  # "-seq" (newest first), "date", "-date"
    after: dict | None = None  # keyset position from the previous page's cursor
    limit: int = 100


_KINDS = (("ref", "refs"), ("tag", "tags"), ("code", "codes"), ("ident", "identifiers"))


def fts_query(text: str) -> str:
    """User text → an FTS5 query of quoted terms (all must match); no syntax leaks through."""
    return " ".join('"' + t.replace('"', '""') + '"' for t in text.split() if t.strip())


class _Builder:
    def __init__(self, query: Query):
        self.q = query
        self.params: dict = {"caller": query.caller, "now": query.now, "emergency": query.emergency}
        self._n = 0

    def name(self, value) -> str:
        self._n += 1
        key = f"p{self._n}"
        self.params[key] = value
        return f":{key}"

    def term_match(self, alias: str, kind: str, term: Term) -> str:
        cond = f"{alias}.kind = '{kind}' AND {alias}.value = {self.name(term.value)}"
        if term.system is not None:
            cond += f" AND {alias}.system = {self.name(term.system)}"
        return cond

    def filters(self) -> dict[str, str]:
        """Every condition a row must meet, keyed like the sources that imply
        them (a driver's own condition need not be checked again per row)."""
        q, where = self.q, {"access": f"EXISTS ({LIVE_ENVELOPE})"}
        for kind, attr in _KINDS:
            for i, group in enumerate(getattr(q, attr)):
                alts = " OR ".join(f"({self.term_match('t', kind, t)})" for t in group)
                where[f"{kind}{i}"] = f"EXISTS (SELECT 1 FROM search_terms t WHERE t.seq = r.seq AND ({alts}))"
        for i, group in enumerate(q.types):
            where[f"type{i}"] = f"r.type IN ({', '.join(self.name(t) for t in group)})"
        for n, (prefix, lo, hi) in enumerate(q.dates):
            sql, values = dates.condition(prefix, lo, hi, n)
            where[f"when{n}"] = sql
            self.params.update(values)
        if q.text and fts_query(q.text):  # FTS5 seeks one rowid's doclists: cheap per candidate
            where["text"] = (f"EXISTS (SELECT 1 FROM records_fts f WHERE records_fts MATCH {self.text()}"
                             " AND f.rowid = r.seq)")
        if q.after is not None:
            where["after"] = self.keyset()
        return where

    def keyset(self) -> str:
        after, sort = self.q.after, self.q.sort
        seq = self.name(after["s"])
        if sort == "-seq":
            return f"r.seq < {seq}"
        d = after.get("d")
        if sort == "date":
            if d is None:
                return f"((r.date_lo IS NULL AND r.seq > {seq}) OR r.date_lo IS NOT NULL)"
            d = self.name(d)
            return f"(r.date_lo > {d} OR (r.date_lo = {d} AND r.seq > {seq}))"
        if d is None:
            return f"(r.date_lo IS NULL AND r.seq < {seq})"
        d = self.name(d)
        return f"(r.date_lo < {d} OR (r.date_lo = {d} AND r.seq < {seq}) OR r.date_lo IS NULL)"

    def text(self) -> str:
        return self.name(fts_query(self.q.text))

    def order(self) -> str:
        return {"-seq": "r.seq DESC", "date": "r.date_lo ASC, r.seq ASC", "-date": "r.date_lo DESC, r.seq DESC"}[
            self.q.sort]

    # ---- candidate sources (each a SELECT of seq) -------------------------

    def sources(self) -> list[tuple[str, str, str, str | None]]:
        """(name, SQL to count it, SQL selecting its candidate seqs, a FROM
        clause that walks it newest-first, when it can) per usable source."""
        q, found = self.q, []
        found.append(("envelopes", "SELECT 1 FROM envelopes WHERE recipient = :caller AND revoked IS NULL",
                      "SELECT r.seq FROM envelopes e JOIN records r ON r.cid = e.manifest"
                      " WHERE e.recipient = :caller AND e.revoked IS NULL", None))
        for kind, attr in _KINDS:
            for i, group in enumerate(getattr(q, attr)):
                parts = [f"SELECT t.seq FROM search_terms t WHERE {self.term_match('t', kind, term)}" for term in group]
                sql = " UNION ALL ".join(parts)
                walk = (f"search_terms w JOIN {_PROBE} ON r.seq = w.seq WHERE {self.term_match('w', kind, group[0])}"
                        f" ORDER BY w.seq DESC" if len(group) == 1 else None)
                found.append((f"{kind}{i}", sql, sql, walk))
        for i, group in enumerate(q.types):
            sql = f"SELECT seq FROM records WHERE type IN ({', '.join(self.name(t) for t in group)})"
            found.append((f"type{i}", sql, sql, None))
        if q.text and fts_query(q.text):
            text = self.text()
            sql = f"SELECT rowid AS seq FROM records_fts WHERE records_fts MATCH {text}"
            found.append(("text", sql, sql, f"records_fts w JOIN {_PROBE} ON r.seq = w.rowid"
                                            f" WHERE w.records_fts MATCH {text} ORDER BY w.rowid DESC"))
        window = _window(q.dates)
        if window is not None:
            lo, hi = self.name(window[0] - _WIDE_MS), self.name(window[1])
            wide = f"SELECT seq FROM records WHERE date_hi - date_lo > {_WIDE_MS}"
            sql = f"SELECT seq FROM records WHERE date_lo BETWEEN {lo} AND {hi} UNION ALL {wide}"
            found.append(("date", sql, sql, None))
            for kind, attr in _KINDS:  # a term inside the window: one range of (kind, value, date_lo)
                for i, group in enumerate(getattr(q, attr)):
                    parts = [f"SELECT t.seq FROM search_terms t WHERE {self.term_match('t', kind, term)}"
                             f" AND t.date_lo BETWEEN {lo} AND {hi}" for term in group]
                    sql = " UNION ALL ".join([*parts, wide])
                    found.append((f"{kind}{i}@date", sql, sql, None))
        return found


def _window(conditions: list[tuple[str, int, int]]) -> tuple[int, int] | None:
    """The instants a record's range must touch to pass every date condition,
    when they bound it on both sides (else no date source is offered)."""
    low, high = None, None
    for prefix, lo, hi in conditions:
        if prefix in ("eq", "ge", "gt", "sa"):
            low = max(low or lo, lo)
        if prefix in ("eq", "le", "lt", "eb"):
            high = min(high or hi, hi)
    return (low, high) if low is not None and high is not None else None


def _estimate(conn: sqlite3.Connection, sql: str, params: dict, cap: int) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM ({sql} LIMIT {cap + 1})", params).fetchone()[0]


def _sizes(conn: sqlite3.Connection, sources: list, params: dict) -> list[int]:
    """Each source's size, exact up to SMALL and bounded by LARGE. Counting
    every source to LARGE costs a few milliseconds each at a million records,
    so all are counted to SMALL first: when one is that small it drives the
    plan whatever the others' sizes, and they need no closer count."""
    sizes = [_estimate(conn, count_sql, params, SMALL) for _, count_sql, _, _ in sources]
    if min(sizes) <= SMALL:
        return sizes
    # No source needs counting past the smallest found so far: its sizes only
    # decide which is smallest. Sources are listed broadest first (envelopes,
    # then single filters, then combined ones), so count from the end.
    cap = LARGE
    for i in reversed(range(len(sources))):
        sizes[i] = _estimate(conn, sources[i][1], params, cap)
        cap = min(cap, sizes[i])
    return sizes


def plan(conn: sqlite3.Connection, query: Query) -> tuple[str, str, dict]:
    """(strategy name, SQL, parameters) for ``query``."""
    b = _Builder(query)
    filters = b.filters()
    limit = b.name(query.limit + 1)
    found = b.sources()
    sources = [(name, size, sql, walk)
               for (name, _, sql, walk), size in zip(found, _sizes(conn, found, b.params))]
    name, size, sql, _ = min(sources, key=lambda source: source[1])

    def where(driver: str) -> str:  # "code0@date" implies code0 (its dates are checked exactly)
        return " AND ".join(sql for key, sql in filters.items() if key != driver.partition("@")[0])

    select = "SELECT r.seq, r.date_lo"  # the page's keys only; run() fetches the rows of the page
    # A walk streams results in order, but when other filters reject most of
    # what it passes (a day among a million, a code within a month) it can
    # read the whole table; gathering a few thousand candidates is bounded.
    conditions = [key for key in filters if key not in ("access", "after")]
    streams = query.sort == "-seq" and (
        (_walk_of(sources, name) is not None and conditions == [name])  # its own index, nothing else to check
        or (not conditions and size * 4 >= _records(conn)))  # the caller reads a good share of every page
    if (size <= SMALL or (size <= LARGE and not streams)) and query.sort == "-seq":
        # ``seq IN (set)`` makes SQLite gather the set into a sorted list and
        # walk it newest first, checking candidates only until the page is
        # full: a few hundred checks, not one per candidate, and no sort.
        return (f"set:{_kind(name)}", f"{select} FROM {_PROBE} WHERE r.seq IN ({sql}) AND {where(name)}"
                                      f" ORDER BY r.seq DESC LIMIT {limit}", b.params)
    if size <= SMALL or (size <= LARGE and not streams):
        return (f"set:{_kind(name)}", f"WITH cand(seq) AS MATERIALIZED ({sql}) {select} FROM cand JOIN {_PROBE}"
                                      f" ON r.seq = cand.seq WHERE {where(name)} ORDER BY {b.order()}"
                                      f" LIMIT {limit}", b.params)
    walkable = [source for source in sources if source[3] is not None]
    if query.sort == "-seq" and walkable:  # walk the smallest ordered index newest first
        name, _, _, walk = min(walkable, key=lambda source: source[1])
        head, _, rest = walk.partition(" WHERE ")
        cond, _, order = rest.partition(" ORDER BY ")
        return (f"walk:{_kind(name)}", f"{select} FROM {head} WHERE {cond} AND {where(name)}"
                                       f" ORDER BY {order} LIMIT {limit}", b.params)
    if query.sort == "-seq":
        return ("walk:seq", f"{select} FROM {_PROBE} WHERE {where('')} ORDER BY r.seq DESC"
                            f" LIMIT {limit}", b.params)
    return ("walk:date", f"{select} FROM records r INDEXED BY idx_records_date_lo_seq WHERE {where('')}"
                         f" ORDER BY {b.order()} LIMIT {limit}", b.params)


def _records(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]


def _walk_of(sources: list, name: str) -> str | None:
    return next(walk for source, _, _, walk in sources if source == name)


def _kind(source: str) -> str:
    kind, at, window = source.partition("@")
    return kind.rstrip("0123456789") + at + window


def run(conn: sqlite3.Connection, query: Query) -> tuple[list[dict], dict | None]:
    """One page: (rows, the keyset position to continue after, or None at the end)."""
    _, sql, params = plan(conn, query)
    keys = conn.execute(sql, params).fetchall()
    more = len(keys) > query.limit
    keys = keys[:query.limit]
    found = {r["seq"]: row_of(r) for r in conn.execute(
        f"SELECT r.*, p.status AS pin_status, p.replicas AS pin_replicas FROM records r"
        f" LEFT JOIN pins p ON p.cid = r.cid WHERE r.seq IN ({','.join('?' * len(keys))})", [k[0] for k in keys])}
    rows = [found[k[0]] for k in keys]
    if not more:
        return rows, None
    last = keys[-1]
    return rows, {"s": last[0], **({"d": last[1]} if query.sort != "-seq" else {})}


def cursor_position(text: str) -> dict:
    """Decodes a keyset position (already base64-decoded JSON) strictly."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or set(doc) - {"s", "d"} or type(doc.get("s")) is not int:
        raise ValueError("bad cursor")
    day = doc.get("d")  # SQLite binds only 64-bit integers: a bigger one was an OverflowError (500)
    if not 0 <= doc["s"] < 2 ** 63 or not (day is None or (type(day) is int and -2 ** 63 <= day < 2 ** 63)):
        raise ValueError("bad cursor")
    return doc
