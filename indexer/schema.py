"""Schema migrations, numbered from day one; ``PRAGMA user_version`` records
the last one applied. Each migration must be safe to re-run after a crash
part-way (``if_not_exists`` / ``replace``), because DDL helpers commit as
they go. Add new migrations at the end; never edit an applied one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .sql import sqlite3

if TYPE_CHECKING:
    import sqlite_utils


def _m001_initial(db: sqlite_utils.Database) -> None:
    db["principals"].create(
        {"did": str, "name": str, "role": str, "created": str}, pk="did", if_not_exists=True)
    db["tokens"].create(
        {"id": str, "hash": bytes, "principal": str, "scopes": str, "created": str,
         "expires": str, "revoked": str},
        pk="id", not_null={"hash", "principal", "scopes", "created"}, if_not_exists=True)
    db["tokens"].create_index(["hash"], unique=True, if_not_exists=True)

    db["records"].create(
        {"seq": int, "id": str, "version": int, "cid": str, "patient": str, "type": str,
         "content_type": str, "title": str, "text": str, "subject": str, "date": str,
         "tags": str, "size": int, "created": str, "updated": str, "author": str},
        pk="seq", not_null={"id", "version", "cid", "content_type", "size", "created", "updated", "author"},
        if_not_exists=True)
    db["records"].create_index(["id"], unique=True, if_not_exists=True)
    db["records"].create_index(["patient", "seq"], if_not_exists=True)
    db["records"].create_index(["type", "seq"], if_not_exists=True)
    db["records"].create_index(["date"], if_not_exists=True)
    db["records"].enable_fts(["title", "text"], fts_version="FTS5", create_triggers=True, replace=True)

    db["versions"].create(
        {"record_id": str, "version": int, "cid": str, "size": int, "content_type": str,
         "created": str, "author": str},
        pk=("record_id", "version"), if_not_exists=True)
    db["versions"].create_index(["cid"], unique=True, if_not_exists=True)

    db["envelopes"].create(
        {"cid": str, "record_id": str, "version": int, "recipient": str, "granter": str,
         "role": str, "granted": str, "expires": str, "revoked": str},
        pk="cid", not_null={"record_id", "version", "recipient", "granter", "role", "granted"},
        if_not_exists=True)
    db["envelopes"].create_index(["recipient", "record_id", "version"], if_not_exists=True)
    db["envelopes"].create_index(["record_id", "version"], if_not_exists=True)

    db["record_tags"].create({"record_id": str, "tag": str}, pk=("record_id", "tag"), if_not_exists=True)
    db["record_tags"].create_index(["tag"], if_not_exists=True)
    db["record_codes"].create({"record_id": str, "system": str, "code": str},
                              pk=("record_id", "system", "code"), if_not_exists=True)
    db["record_codes"].create_index(["code"], if_not_exists=True)

    db["pins"].create(
        {"cid": str, "record_id": str, "kind": str, "desired": int, "status": str, "replicas": int,
         "rmin": int, "rmax": int, "attempts": int, "next_attempt": float, "error": str,
         "created": str, "updated": str},
        pk="cid", not_null={"kind", "desired", "status", "created", "updated"}, if_not_exists=True)
    db["pins"].create_index(["next_attempt"], if_not_exists=True)
    db["pins"].create_index(["record_id"], if_not_exists=True)

    db["audit"].create(
        {"seq": int, "time": str, "actor": str, "action": str, "record": str, "outcome": str,
         "detail": str, "prev": str, "hash": str},
        pk="seq", not_null={"time", "action", "outcome", "prev", "hash"}, if_not_exists=True)
    db["audit"].create_index(["record", "seq"], if_not_exists=True)
    db["audit"].create_index(["actor", "seq"], if_not_exists=True)


def _m002_record_authority(db: sqlite_utils.Database) -> None:
    """Issue 12: an envelope names the manifest it seals (access is checked
    against the record's current manifest CID, never by version number), and
    who may change a record is recorded on this node (``record_roles``), not
    read from signed metadata."""
    if "manifest" not in db["envelopes"].columns_dict:
        db["envelopes"].add_column("manifest", str)
    db.execute("UPDATE envelopes SET manifest = (SELECT v.cid FROM versions v WHERE v.record_id = envelopes.record_id"
               " AND v.version = envelopes.version) WHERE manifest IS NULL")
    db["envelopes"].create_index(["recipient", "manifest"], if_not_exists=True)
    db["record_roles"].create({"record_id": str, "principal": str, "role": str},
                              pk=("record_id", "principal", "role"), if_not_exists=True)
    db["record_roles"].create_index(["principal"], if_not_exists=True)
    # What the rules before this migration allowed: the first version's author
    # created the record, its patient is the recorded one, and every author of
    # a later version was (then) allowed to write.
    db.execute("INSERT OR IGNORE INTO record_roles (record_id, principal, role)"
               " SELECT record_id, author, 'creator' FROM versions v WHERE version ="
               " (SELECT MIN(version) FROM versions w WHERE w.record_id = v.record_id)")
    db.execute("INSERT OR IGNORE INTO record_roles (record_id, principal, role)"
               " SELECT id, patient, 'patient' FROM records WHERE patient IS NOT NULL")
    db.execute("INSERT OR IGNORE INTO record_roles (record_id, principal, role)"
               " SELECT DISTINCT record_id, author, 'writer' FROM versions")


def _m003_search(db: sqlite_utils.Database) -> None:
    """Issue 8: dates as UTC instant ranges (``date_lo``/``date_hi``, epoch ms)
    and one table of search terms (tags, codes, references, identifiers)
    keyed by the record's ``seq``, indexed by value *and seq*, so a search can
    walk any one filter newest-first and stop after a page."""
    from .dates import date_range
    for column in ("date_lo", "date_hi"):
        if column not in db["records"].columns_dict:
            db["records"].add_column(column, int)
    for seq, text in db.execute("SELECT seq, date FROM records WHERE date IS NOT NULL AND date_lo IS NULL").fetchall():
        try:
            lo, hi = date_range(text)
        except ValueError:
            continue
        db.execute("UPDATE records SET date_lo = ?, date_hi = ? WHERE seq = ?", [lo, hi, seq])
    db["records"].create_index(["cid"], if_not_exists=True)
    db["records"].create_index(["date_lo", "seq"], if_not_exists=True)
    db["records"].create_index(["date_hi"], if_not_exists=True)
    # records whose date spans more than a day (a month, a year, a long
    # period): a date search adds them to its window (indexer/search.py)
    db.execute("CREATE INDEX IF NOT EXISTS records_wide ON records (seq) WHERE date_hi - date_lo > 86400000")
    # date_lo is the record's, repeated so "this code in this month" is one index range
    db.execute("CREATE TABLE IF NOT EXISTS search_terms (seq INTEGER NOT NULL, kind TEXT NOT NULL,"
               " system TEXT NOT NULL, value TEXT NOT NULL, date_lo INTEGER,"
               " PRIMARY KEY (seq, kind, system, value)) WITHOUT ROWID")
    db.execute("CREATE INDEX IF NOT EXISTS search_terms_value ON search_terms (kind, value, seq)")
    db.execute("CREATE INDEX IF NOT EXISTS search_terms_system ON search_terms (kind, system, value, seq)")
    db.execute("CREATE INDEX IF NOT EXISTS search_terms_dated ON search_terms (kind, value, date_lo)")
    if "record_tags" in db.table_names():
        db.execute("INSERT OR IGNORE INTO search_terms SELECT r.seq, 'tag', '', t.tag, r.date_lo FROM record_tags t"
                   " JOIN records r ON r.id = t.record_id")
        db.execute("INSERT OR IGNORE INTO search_terms SELECT r.seq, 'code', c.system, c.code, r.date_lo"
                   " FROM record_codes c JOIN records r ON r.id = c.record_id")
        db.execute("INSERT OR IGNORE INTO search_terms SELECT seq, 'ref', '', patient, date_lo FROM records"
                   " WHERE patient IS NOT NULL")
        db.execute("INSERT OR IGNORE INTO search_terms SELECT seq, 'ref', '', subject, date_lo FROM records"
                   " WHERE subject IS NOT NULL")
        db["record_tags"].drop()
        db["record_codes"].drop()
    db.execute("ANALYZE")


def _m004_fts_secure_delete(db: sqlite_utils.Database) -> None:
    """Issue 10: FTS5 normally deletes by adding tombstones, leaving an erased
    record's words in older index segments until a merge; ``secure-delete``
    removes them at once (SQLite 3.44+), and ``optimize`` rewrites what an
    older index still holds."""
    db.execute("INSERT INTO records_fts(records_fts, rank) VALUES('secure-delete', 1)")
    db.execute("INSERT INTO records_fts(records_fts) VALUES('optimize')")


def _m005_audit_anchors(db: sqlite_utils.Database) -> None:
    """Issue 10: anchors of the audit chain this node wrote (or restored). A
    cache of what the pinned anchor blocks say, so verify and the writer know
    where the anchored part ends without fetching the chain."""
    db["audit_anchors"].create(
        {"cid": str, "prev": str, "first_seq": int, "last_seq": int, "head": str, "created": str},
        pk="cid", not_null={"first_seq", "last_seq", "head", "created"}, if_not_exists=True)
    db["audit_anchors"].create_index(["last_seq"], unique=True, if_not_exists=True)


def _m006_covering_access(db: sqlite_utils.Database) -> None:
    """Issue 8 at a million records: a search checks every candidate's access
    (a live envelope for the record's current manifest) and its filters.
    Read from the record row and the envelope row, that was three random
    page reads (and SQLCipher page decryptions) per candidate; these two
    narrow covering indexes answer both from one entry each, many entries
    to a page. ``envelopes_access`` has the old (recipient, manifest)
    index as its prefix and replaces it."""
    db.execute("CREATE INDEX IF NOT EXISTS records_probe ON records (seq, cid, id, type, date_lo, date_hi)")
    db.execute("CREATE INDEX IF NOT EXISTS envelopes_access"
               " ON envelopes (recipient, manifest, record_id, revoked, expires, role)")
    db.execute("DROP INDEX IF EXISTS idx_envelopes_recipient_manifest")
    db.execute("PRAGMA analysis_limit = 1000")  # statistics from a sample: seconds, not minutes, at a million
    db.execute("ANALYZE")


def _m007_resource_copies(db: sqlite_utils.Database) -> None:
    """Issue 11: a copy of each small FHIR resource's current version, so a
    searchset is served from the (encrypted) index instead of opening every
    resource on the page. Keyed by the manifest CID it is the content of;
    only ever served to a caller holding a live envelope for that manifest
    (records.live_contents), dropped with the version and with the record."""
    db["resource_copies"].create({"cid": str, "record_id": str, "body": bytes}, pk="cid",
                                 not_null={"record_id", "body"}, if_not_exists=True)
    db["resource_copies"].create_index(["record_id"], if_not_exists=True)


def _m008_audit_moved(db: sqlite_utils.Database) -> None:
    """Issue 11: the last read audit moved from the staging database into
    the chain (indexer/audit_stage.py), written with the moved entries."""
    db.execute("CREATE TABLE IF NOT EXISTS audit_moved (generation TEXT NOT NULL, id INTEGER NOT NULL)")


MIGRATIONS = [_m001_initial, _m002_record_authority, _m003_search, _m004_fts_secure_delete, _m005_audit_anchors,
              _m006_covering_access, _m007_resource_copies, _m008_audit_moved]


def migrate(conn: sqlite3.Connection) -> int:
    """Applies pending migrations; returns the schema version now in force."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current >= len(MIGRATIONS):
        return len(MIGRATIONS)
    # Only a pending migration needs sqlite-utils: it imports numpy when that is
    # installed (~24 MB resident together), for the life of the daemon.
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for number, migration in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        migration(db)
        conn.execute(f"PRAGMA user_version={number}")
    return len(MIGRATIONS)
