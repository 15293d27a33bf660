//! The state manager's store: SQLite (WAL, `synchronous=FULL`), so a
//! transition is durable when `transition` returns, and several processes
//! or threads may share one file. Every call that changes anything is one
//! IMMEDIATE transaction: the compare-and-set, the epoch check, the audit
//! row with the next gap-free sequence number, and the idempotency record
//! commit together or not at all. [`Store::write_group`] puts several
//! registrations and transitions in one transaction, each in a savepoint
//! of its own (so each is answered as if alone), for one sync to disk.
//! Time is passed in (nanoseconds); nothing here reads a clock.

use super::lifecycle::{legal, needs_cnc, reconcile, ObjState, ALL};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Schema migrations, in order: migration k takes `user_version` k to k + 1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE objects (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    vision_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    cnc_id TEXT NOT NULL DEFAULT '',
    epoch INTEGER NOT NULL DEFAULT 0,
    lane INTEGER NOT NULL,
    class_id TEXT NOT NULL,
    confidence REAL NOT NULL,
    x_m REAL NOT NULL,
    y_m REAL NOT NULL,
    velocity_x_mps REAL NOT NULL,
    detected_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX objects_by_state ON objects (state);
CREATE INDEX objects_by_detected_at ON objects (detected_at_ns);
CREATE TABLE transitions (
    seq INTEGER PRIMARY KEY,
    object_id BLOB NOT NULL,
    from_state INTEGER NOT NULL,
    to_state INTEGER NOT NULL,
    actor TEXT NOT NULL,
    cnc_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    reason TEXT NOT NULL,
    belt_position_m REAL NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE INDEX transitions_by_object ON transitions (object_id, seq);
CREATE TABLE cnc_epochs (
    cnc_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE requests ADD COLUMN at_ns INTEGER NOT NULL DEFAULT 0;
CREATE INDEX requests_by_time ON requests (at_ns);
CREATE INDEX objects_by_updated_at ON objects (updated_at_ns);
"#,
];

/// `meta` key: the highest seq retention has deleted, so a seq is never
/// handed out twice even when every row of the audit trail was pruned.
const PRUNED_THROUGH_SEQ: &str = "pruned_through_seq";

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not a cncpick state database, or damaged ({detail}); it was left untouched")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: schema version {found} is newer than this cncpick knows ({known}); it was left untouched")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path}: the disk is full; nothing was changed ({detail})")]
    DiskFull { path: PathBuf, detail: String },
    #[error("{path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// A newly confirmed object, as the tracker registers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub request_id: String,
    pub object_id: [u8; 16],
    pub actor: String,
    pub object: Seen,
}

/// What the tracker saw of an object when it registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub vision_id: String,
    pub lane: u8,
    pub class_id: String,
    pub confidence: f64,
    pub x_m: f64,
    pub y_m: f64,
    pub velocity_x_mps: f64,
    pub detected_at_ns: i64,
}

/// One object's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub object_id: [u8; 16],
    pub state: ObjState,
    pub cnc_id: String,
    pub epoch: u64,
    pub seen: Seen,
    pub updated_at_ns: i64,
    pub last_seq: u64,
}

/// One accepted transition: a row of the audit trail and one ObjectEvent.
/// A registration is the transition from no state (`from: None`) to DETECTED.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub object_id: [u8; 16],
    pub from: Option<ObjState>,
    pub to: ObjState,
    pub actor: String,
    pub cnc_id: String,
    pub epoch: u64,
    pub reason: String,
    pub belt_position_m: f64,
    pub at_ns: i64,
}

/// A request to move one object from `expected` to `new`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionRequest {
    pub request_id: String,
    pub object_id: [u8; 16],
    pub expected: ObjState,
    pub new: ObjState,
    pub actor: String,
    pub cnc_id: String,
    pub epoch: u64,
    pub reason: String,
    pub belt_position_m: f64,
}

/// Why a transition was refused. Every refusal of a known object carries
/// its current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    UnknownObject,
    /// Compare-and-set failed: the object is not in the expected state.
    NotInExpectedState {
        current: ObjState,
    },
    Illegal {
        current: ObjState,
    },
    /// Taking or handling an object needs a CNC id.
    NoCnc {
        current: ObjState,
    },
    /// The object is held by another CNC.
    HeldByOther {
        current: ObjState,
        holder: String,
    },
    /// The CNC has never been activated (it has no epoch yet).
    UnknownCnc {
        current: ObjState,
    },
    StaleEpoch {
        current: ObjState,
        given: u64,
        epoch: u64,
    },
}

impl Refusal {
    pub fn current(&self) -> Option<ObjState> {
        match self {
            Refusal::UnknownObject => None,
            Refusal::NotInExpectedState { current }
            | Refusal::Illegal { current }
            | Refusal::NoCnc { current }
            | Refusal::HeldByOther { current, .. }
            | Refusal::UnknownCnc { current }
            | Refusal::StaleEpoch { current, .. } => Some(*current),
        }
    }

    /// The reason, for a reply's `error` and the logs.
    pub fn describe(&self, req: &TransitionRequest) -> String {
        let (from, to) = (req.expected, req.new);
        match self {
            Refusal::UnknownObject => "no such object".into(),
            Refusal::NotInExpectedState { current } => {
                format!("expected {from}, but the object is {current}")
            }
            Refusal::Illegal { current } => {
                format!(
                    "{from} -> {to} is not a transition of the object lifecycle (it is {current})"
                )
            }
            Refusal::NoCnc { .. } => format!("{from} -> {to} must name the CNC (cnc_id)"),
            Refusal::HeldByOther { holder, .. } => {
                format!("the object is held by CNC {holder}, not {:?}", req.cnc_id)
            }
            Refusal::UnknownCnc { .. } => format!(
                "CNC {:?} has no epoch: it has never been activated",
                req.cnc_id
            ),
            Refusal::StaleEpoch { given, epoch, .. } => format!(
                "stale epoch {given} for CNC {:?} (its epoch is {epoch})",
                req.cnc_id
            ),
        }
    }
}

/// A transition's answer; a repeated request id gets the first one again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Accepted(Event),
    Refused(Refusal),
}

/// A registration's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// False if the object was already registered.
    pub created: bool,
    pub record: Record,
    /// The DETECTED event, if this call created the object.
    pub event: Option<Event>,
}

/// One write of a group ([`Store::write_group`]): what
/// [`Store::register`] or [`Store::transition`] takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A registration at `now_ns`.
    Register(Registration, i64),
    /// A transition at `at_ns`.
    Transition(TransitionRequest, i64),
}

/// A write's answer, as [`Store::register`] or [`Store::transition`] gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Registered(Registered),
    Transitioned(Answer),
}

const REGISTERING: &str = "registering an object";
const TRANSITIONING: &str = "a transition";

/// CNC ids and their epochs.
pub type Epochs = Vec<(String, u64)>;

/// What recovery did on activation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Every CNC's new epoch, by id.
    pub epochs: Epochs,
    /// The transitions recovery made, in seq order.
    pub events: Vec<Event>,
    /// Non-terminal objects found.
    pub open: usize,
    /// Of them, those left DETECTED (still reachable).
    pub kept: usize,
    /// Of them, the picks in flight, left PICKING for their CNCs' next
    /// epochs to settle with what the CNCs report ([`Store::begin_epoch`]).
    pub in_flight: usize,
}

/// A pick's outcome that its CNC could not record in the epoch the pick ran
/// in (refused as stale: the state manager's recovery raised the epoch
/// while the pick ran), reported with the CNC's next epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub object_id: [u8; 16],
    /// The epoch the pick ran in.
    pub epoch: u64,
    /// Where the pick left the object (PICKED, DROPPED or MISSED).
    pub to: ObjState,
    /// Why, as the CNC would have recorded it (empty for a pick).
    pub reason: String,
    /// The CNC's actor name, as on its other transitions.
    pub actor: String,
}

/// What a CNC's new epoch did ([`Store::begin_epoch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Begun {
    pub epoch: u64,
    /// The transitions made, in seq order: the outcomes reported, then the
    /// settling of the rest.
    pub events: Vec<Event>,
    /// Reported outcomes not recorded, with the state the object holds
    /// (None: no such object): it was no longer this CNC's pick in the
    /// reported epoch (expiry settled it meanwhile), or the outcome is not
    /// one a pick can have. One the object holds already is not listed
    /// (an answer lost and the call made again).
    pub unrecorded: Vec<(Reported, Option<ObjState>)>,
}

/// What one retention batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pruned {
    pub objects: usize,
    pub transitions: usize,
    pub requests: usize,
    /// More are due: run another batch.
    pub more: bool,
}

/// Filters for `list`; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub states: Vec<ObjState>,
    pub lane: Option<u8>,
    pub detected_after_ns: Option<i64>,
    pub detected_before_ns: Option<i64>,
    pub limit: usize,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// A size cap is set ([`Store::limit_size`]).
    capped: bool,
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
    )
}

/// Under a size cap, a write that would add rows is refused once the
/// database has reached the cap, as SQLite refuses one that needs a page
/// past it (SQLITE_FULL): the cap means full, not "full once the slack in
/// the last pages is used too".
fn check_room(tx: &Connection, capped: bool) -> rusqlite::Result<()> {
    if !capped {
        return Ok(());
    }
    let used: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let cap: i64 = tx.query_row("PRAGMA max_page_count", [], |r| r.get(0))?;
    if used >= cap {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some(format!("the database is at its size cap of {cap} pages")),
        ));
    }
    Ok(())
}

/// Maps a SQLite error to a StoreError for `path`: a full disk is its own
/// kind (the caller refuses new work and raises an alert).
fn sql_error(path: &Path, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| {
        if is_full(&source) {
            StoreError::DiskFull {
                path: path.clone(),
                detail: source.to_string(),
            }
        } else {
            StoreError::Sqlite {
                path: path.clone(),
                context,
                source,
            }
        }
    }
}

fn state_of(id: i64) -> rusqlite::Result<ObjState> {
    u8::try_from(id)
        .ok()
        .and_then(ObjState::from_id)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, id))
}

fn uuid_of(v: Vec<u8>) -> rusqlite::Result<[u8; 16]> {
    let n = v.len();
    v.try_into()
        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, n as i64))
}

const RECORD_COLUMNS: &str = "id, vision_id, state, cnc_id, epoch, lane, class_id, confidence, \
     x_m, y_m, velocity_x_mps, detected_at_ns, updated_at_ns, last_seq";

fn record_of(row: &rusqlite::Row) -> rusqlite::Result<Record> {
    Ok(Record {
        object_id: uuid_of(row.get(0)?)?,
        state: state_of(row.get(2)?)?,
        cnc_id: row.get(3)?,
        epoch: row.get::<_, i64>(4)? as u64,
        seen: Seen {
            vision_id: row.get(1)?,
            lane: row.get(5)?,
            class_id: row.get(6)?,
            confidence: row.get(7)?,
            x_m: row.get(8)?,
            y_m: row.get(9)?,
            velocity_x_mps: row.get(10)?,
            detected_at_ns: row.get(11)?,
        },
        updated_at_ns: row.get(12)?,
        last_seq: row.get::<_, i64>(13)? as u64,
    })
}

const EVENT_COLUMNS: &str =
    "seq, object_id, from_state, to_state, actor, cnc_id, epoch, reason, belt_position_m, at_ns";

fn event_of(row: &rusqlite::Row) -> rusqlite::Result<Event> {
    let from: i64 = row.get(2)?;
    Ok(Event {
        seq: row.get::<_, i64>(0)? as u64,
        object_id: uuid_of(row.get(1)?)?,
        from: if from == 0 {
            None
        } else {
            Some(state_of(from)?)
        },
        to: state_of(row.get(3)?)?,
        actor: row.get(4)?,
        cnc_id: row.get(5)?,
        epoch: row.get::<_, i64>(6)? as u64,
        reason: row.get(7)?,
        belt_position_m: row.get(8)?,
        at_ns: row.get(9)?,
    })
}

fn insert_event(tx: &Connection, e: &Event) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO transitions (seq, object_id, from_state, to_state, actor, cnc_id, epoch, \
         reason, belt_position_m, at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.seq as i64,
            e.object_id.as_slice(),
            e.from.map_or(0, |s| s.id() as i64),
            e.to.id() as i64,
            e.actor,
            e.cnc_id,
            e.epoch as i64,
            e.reason,
            e.belt_position_m,
            e.at_ns
        ],
    )?;
    Ok(())
}

/// The highest seq ever handed out (0: none), pruned or not.
fn high_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM transitions), 0), \
                coalesce((SELECT value FROM meta WHERE key = ?1), 0))",
        [PRUNED_THROUGH_SEQ],
        |r| r.get::<_, i64>(0),
    )
    .map(|s| s as u64)
}

fn next_seq(tx: &Connection) -> rusqlite::Result<u64> {
    high_seq(tx).map(|s| s + 1)
}

fn remembered<T: for<'de> Deserialize<'de>>(
    tx: &Connection,
    request_id: &str,
) -> rusqlite::Result<Option<T>> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let answer: Option<String> = tx
        .query_row(
            "SELECT answer FROM requests WHERE request_id = ?1",
            [request_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(answer.and_then(|a| serde_json::from_str(&a).ok()))
}

fn remember<T: Serialize>(
    tx: &Connection,
    request_id: &str,
    answer: &T,
    now_ns: i64,
) -> rusqlite::Result<()> {
    if request_id.is_empty() {
        return Ok(());
    }
    let text = serde_json::to_string(answer).unwrap_or_default();
    tx.execute(
        "INSERT OR REPLACE INTO requests (request_id, answer, at_ns) VALUES (?1, ?2, ?3)",
        params![request_id, text, now_ns],
    )?;
    Ok(())
}

/// SQLite's largest `max_page_count`.
const MAX_PAGE_COUNT: i64 = 4_294_967_294;

impl Store {
    /// Opens the database at `path`, creating it if there is no file. An
    /// existing file that is not a sound SQLite database, or whose schema
    /// is newer than this build's, is refused and left as it is.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let exists = path.exists();
        if exists {
            let mut head = [0u8; 16];
            let n = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                .map_err(|e| corrupt(format!("cannot read it: {e}")))?;
            if n > 0 && (n < 16 || &head != SQLITE_MAGIC) {
                return Err(corrupt("no SQLite header".into()));
            }
        }
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(sql_error(path, "opening"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql_error(path, "setting the busy timeout"))?;
        if exists {
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| corrupt(e.to_string()))?;
            if check != "ok" {
                return Err(corrupt(check));
            }
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_error(path, "switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("journal mode {mode}, not WAL")));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sql_error(path, "setting durability"))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            capped: false,
        };
        store.migrate(version)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps the database file at about `bytes` (SQLite's max_page_count; 0
    /// lifts the cap); at it every registration, transition and expiry
    /// fails as if the disk were full (recovery and pruning still run:
    /// SQLite itself refuses them only if they need a page past the cap).
    /// Returns the cap in effect, in bytes (never below the pages already
    /// in use, so a cap below them leaves the store full at once).
    pub fn limit_size(&mut self, bytes: u64) -> Result<u64, StoreError> {
        let e = self.err("limiting the size");
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(&e)?;
        // 0: no cap (SQLite's own largest page count).
        let pages = if bytes == 0 {
            MAX_PAGE_COUNT
        } else {
            (bytes / page.max(1) as u64).clamp(1, MAX_PAGE_COUNT as u64) as i64
        };
        let set: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .map_err(&e)?;
        self.capped = bytes != 0;
        Ok(set as u64 * page as u64)
    }

    /// Whether each commit is synced to disk before it returns (the
    /// default, and what the node always uses). Off, an OS crash or power
    /// loss may lose the latest commits (it never corrupts the file): only
    /// for building large databases for tests and benchmarks quickly.
    pub fn set_sync_each_commit(&self, on: bool) -> Result<(), StoreError> {
        let level = if on { "FULL" } else { "OFF" };
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {level}"))
            .map_err(self.err("setting durability"))
    }

    fn err(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
        sql_error(&self.path, context)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        for (k, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let e = sql_error(&self.path, "migrating the schema");
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&e)?;
            tx.execute_batch(sql).map_err(&e)?;
            tx.pragma_update(None, "user_version", (k + 1) as i64)
                .map_err(&e)?;
            tx.commit().map_err(&e)?;
        }
        Ok(())
    }

    /// Registers an object in DETECTED; idempotent on its id (and request id).
    pub fn register(&mut self, r: &Registration, now_ns: i64) -> Result<Registered, StoreError> {
        self.alone(REGISTERING, |tx, capped| {
            Self::register_in(tx, capped, r, now_ns)
        })
    }

    /// `f` in an IMMEDIATE transaction of its own, committed if it succeeds.
    fn alone<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&Connection, bool) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let e = sql_error(&self.path, context);
        let capped = self.capped;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let done = f(&tx, capped).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(done)
    }

    fn register_in(
        tx: &Connection,
        capped: bool,
        r: &Registration,
        now_ns: i64,
    ) -> rusqlite::Result<Registered> {
        let existing = tx
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM objects WHERE id = ?1"),
                [r.object_id.as_slice()],
                record_of,
            )
            .optional()?;
        if let Some(record) = existing {
            return Ok(Registered {
                created: false,
                record,
                event: None,
            });
        }
        check_room(tx, capped)?;
        let seq = next_seq(tx)?;
        let event = Event {
            seq,
            object_id: r.object_id,
            from: None,
            to: ObjState::Detected,
            actor: r.actor.clone(),
            cnc_id: String::new(),
            epoch: 0,
            reason: "registered".into(),
            belt_position_m: r.object.x_m,
            at_ns: now_ns,
        };
        let record = Record {
            object_id: r.object_id,
            state: ObjState::Detected,
            cnc_id: String::new(),
            epoch: 0,
            seen: r.object.clone(),
            updated_at_ns: now_ns,
            last_seq: seq,
        };
        let o = &record.seen;
        tx.execute(
            &format!(
                "INSERT INTO objects ({RECORD_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                record.object_id.as_slice(),
                o.vision_id,
                record.state.id() as i64,
                record.cnc_id,
                0i64,
                o.lane,
                o.class_id,
                o.confidence,
                o.x_m,
                o.y_m,
                o.velocity_x_mps,
                o.detected_at_ns,
                record.updated_at_ns,
                seq as i64
            ],
        )?;
        insert_event(tx, &event)?;
        Ok(Registered {
            created: true,
            record,
            event: Some(event),
        })
    }

    /// Compare-and-set one object's state. The answer is durable (and
    /// remembered under the request id) before this returns.
    pub fn transition(&mut self, t: &TransitionRequest, now_ns: i64) -> Result<Answer, StoreError> {
        self.alone(TRANSITIONING, |tx, capped| {
            Self::transition_in(tx, capped, t, now_ns)
        })
    }

    fn transition_in(
        tx: &Connection,
        capped: bool,
        t: &TransitionRequest,
        now_ns: i64,
    ) -> rusqlite::Result<Answer> {
        if let Some(first) = remembered::<Answer>(tx, &t.request_id)? {
            return Ok(first);
        }
        check_room(tx, capped)?;
        let answer = Self::decide(tx, t, now_ns)?;
        if let Answer::Accepted(ev) = &answer {
            insert_event(tx, ev)?;
            let cnc_id = match t.new {
                ObjState::Detected => String::new(),
                _ => t.cnc_id.clone(),
            };
            tx.execute(
                "UPDATE objects SET state = ?2, cnc_id = ?3, epoch = ?4, updated_at_ns = ?5, \
                 last_seq = ?6 WHERE id = ?1",
                params![
                    t.object_id.as_slice(),
                    t.new.id() as i64,
                    cnc_id,
                    t.epoch as i64,
                    now_ns,
                    ev.seq as i64
                ],
            )?;
        }
        remember(tx, &t.request_id, &answer, now_ns)?;
        Ok(answer)
    }

    /// Registrations and transitions, in order, in one transaction: one
    /// commit (one sync to disk) for them all. Each is done as if alone,
    /// in a savepoint of its own, so one that fails leaves the others as
    /// they would be without it, and each gets the answer it would get
    /// alone. Every answer is durable when this returns. If the group
    /// cannot be committed whole (SQLite rolled the transaction back on an
    /// error, or the commit failed), nothing of it stays, and each write is
    /// done again on its own, to get its own answer.
    pub fn write_group(&mut self, writes: &[Write]) -> Vec<Result<Written, StoreError>> {
        match self.try_group(writes) {
            Some(done) => done,
            None => writes.iter().map(|w| self.write_alone(w)).collect(),
        }
    }

    fn write_alone(&mut self, w: &Write) -> Result<Written, StoreError> {
        match w {
            Write::Register(r, now_ns) => self.register(r, *now_ns).map(Written::Registered),
            Write::Transition(t, at_ns) => self.transition(t, *at_ns).map(Written::Transitioned),
        }
    }

    /// [`Store::write_group`] in one transaction; None if it could not
    /// commit whole (then none of it stays).
    fn try_group(&mut self, writes: &[Write]) -> Option<Vec<Result<Written, StoreError>>> {
        let path = self.path.clone();
        let capped = self.capped;
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ok()?;
        let mut done = Vec::with_capacity(writes.len());
        for w in writes {
            let sp = tx.savepoint().ok()?;
            let out = match w {
                Write::Register(r, now_ns) => Self::register_in(&sp, capped, r, *now_ns)
                    .map(Written::Registered)
                    .map_err(sql_error(&path, REGISTERING)),
                Write::Transition(t, at_ns) => Self::transition_in(&sp, capped, t, *at_ns)
                    .map(Written::Transitioned)
                    .map_err(sql_error(&path, TRANSITIONING)),
            };
            if out.is_ok() {
                sp.commit().ok()?;
            } else {
                // Dropped: rolled back to where this write began.
                drop(sp);
            }
            // Some errors (a full disk, I/O) make SQLite roll back the
            // whole transaction: what the group did before is gone.
            if tx.is_autocommit() {
                return None;
            }
            done.push(out);
        }
        tx.commit().ok()?;
        Some(done)
    }

    fn decide(tx: &Connection, t: &TransitionRequest, now_ns: i64) -> rusqlite::Result<Answer> {
        let row: Option<(i64, String)> = tx
            .query_row(
                "SELECT state, cnc_id FROM objects WHERE id = ?1",
                [t.object_id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((state, holder)) = row else {
            return Ok(Answer::Refused(Refusal::UnknownObject));
        };
        let current = state_of(state)?;
        if current != t.expected {
            return Ok(Answer::Refused(Refusal::NotInExpectedState { current }));
        }
        if !legal(t.expected, t.new) {
            return Ok(Answer::Refused(Refusal::Illegal { current }));
        }
        if needs_cnc(t.expected, t.new) {
            if t.cnc_id.is_empty() {
                return Ok(Answer::Refused(Refusal::NoCnc { current }));
            }
            if current.held_by_cnc() && holder != t.cnc_id {
                return Ok(Answer::Refused(Refusal::HeldByOther { current, holder }));
            }
            let epoch: Option<i64> = tx
                .query_row(
                    "SELECT epoch FROM cnc_epochs WHERE cnc_id = ?1",
                    [&t.cnc_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(epoch) = epoch else {
                return Ok(Answer::Refused(Refusal::UnknownCnc { current }));
            };
            if t.epoch != epoch as u64 {
                return Ok(Answer::Refused(Refusal::StaleEpoch {
                    current,
                    given: t.epoch,
                    epoch: epoch as u64,
                }));
            }
        }
        Ok(Answer::Accepted(Event {
            seq: next_seq(tx)?,
            object_id: t.object_id,
            from: Some(t.expected),
            to: t.new,
            actor: t.actor.clone(),
            cnc_id: t.cnc_id.clone(),
            epoch: t.epoch,
            reason: t.reason.clone(),
            belt_position_m: t.belt_position_m,
            at_ns: now_ns,
        }))
    }

    /// A CNC's new epoch (on each activation), in one transaction with
    /// the settling of what its earlier epochs held: a pick in `reported`
    /// whose object is still PICKING by this CNC in the epoch the pick ran
    /// in ends as the CNC reports (actor the CNC's, in the pick's epoch);
    /// then ([`reconcile`], actor `actor`) its assignments are revoked
    /// (and passed on to MISSED if out of reach), and a pick in flight
    /// that it did not report ends MISSED. A result its old epoch reports
    /// later is refused as stale.
    pub fn begin_epoch(
        &mut self,
        cnc_id: &str,
        now_ns: i64,
        reach_end_x_m: f64,
        actor: &str,
        reported: &[Reported],
    ) -> Result<Begun, StoreError> {
        let e = sql_error(&self.path, "raising an epoch");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let run = |tx: &rusqlite::Transaction| -> rusqlite::Result<Begun> {
            let epoch = tx.query_row(
                "INSERT INTO cnc_epochs (cnc_id, epoch) VALUES (?1, 1) \
                 ON CONFLICT (cnc_id) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                [cnc_id],
                |r| r.get::<_, i64>(0),
            )?;
            let held = [ObjState::Assigned.id(), ObjState::Picking.id()];
            let mut stmt = tx.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE cnc_id = ?1 AND state IN ({}, {}) \
                 ORDER BY last_seq",
                held[0], held[1]
            ))?;
            let mut records = stmt
                .query_map([cnc_id], record_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Begun {
                epoch: epoch as u64,
                ..Begun::default()
            };
            let mut seq = next_seq(tx)?;
            let mut unmatched = Vec::new();
            for rep in reported {
                let at = records.iter().position(|r| {
                    r.object_id == rep.object_id
                        && r.state == ObjState::Picking
                        && r.epoch == rep.epoch
                });
                match at {
                    Some(k) if legal(ObjState::Picking, rep.to) => {
                        let r = records.remove(k);
                        let reason = format!(
                            "{}{}reported with epoch {epoch}: recovery fenced the pick's epoch \
                             while it ran",
                            rep.reason,
                            if rep.reason.is_empty() { "" } else { "; " }
                        );
                        let step = [(ObjState::Picking, rep.to, reason.as_str())];
                        let x_m = predicted_x_m(&r, now_ns);
                        apply(
                            tx,
                            &r,
                            &step,
                            x_m,
                            &rep.actor,
                            now_ns,
                            &mut seq,
                            &mut out.events,
                        )?;
                    }
                    _ => unmatched.push(rep),
                }
            }
            settle(tx, &records, now_ns, reach_end_x_m, actor, &mut out.events)?;
            // What the store holds instead, once settled.
            for rep in unmatched {
                let holds = tx
                    .query_row(
                        "SELECT state FROM objects WHERE id = ?1",
                        [rep.object_id.as_slice()],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .and_then(|v| ObjState::from_id(v as u8));
                if holds != Some(rep.to) {
                    out.unrecorded.push((rep.clone(), holds));
                }
            }
            Ok(out)
        };
        let out = run(&tx).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// Recovery, on activation: raises every CNC's epoch (so picks in
    /// flight before the restart are fenced off), then brings each
    /// non-terminal object but a pick in flight to a state no CNC holds
    /// ([`reconcile`]). A pick in flight is left PICKING: its CNC can no
    /// longer record the outcome in the pick's epoch, and reports it with
    /// its next ([`Store::begin_epoch`]); expiry settles it if no CNC
    /// comes back. An
    /// object is still reachable if its position predicted for `now_ns`
    /// (from where and when it was seen, at its registered velocity) is
    /// upstream of `reach_end_x_m`, the downstream end of the last reach
    /// window. One transaction: it all happens or none of it does.
    pub fn recover(
        &mut self,
        now_ns: i64,
        reach_end_x_m: f64,
        actor: &str,
    ) -> Result<Recovered, StoreError> {
        let e = sql_error(&self.path, "recovering");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let mut out = Recovered::default();
        let read = |tx: &rusqlite::Transaction| -> rusqlite::Result<(Epochs, Vec<Record>)> {
            let mut stmt =
                tx.prepare("UPDATE cnc_epochs SET epoch = epoch + 1 RETURNING cnc_id, epoch")?;
            let epochs = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let open: Vec<ObjState> = ALL.into_iter().filter(|s| !s.is_terminal()).collect();
            let ids: Vec<String> = open.iter().map(|s| s.id().to_string()).collect();
            let mut stmt = tx.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE state IN ({}) ORDER BY last_seq",
                ids.join(",")
            ))?;
            let records = stmt
                .query_map([], record_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((epochs, records))
        };
        let (mut epochs, mut open) = read(&tx).map_err(&e)?;
        epochs.sort();
        out.epochs = epochs;
        out.open = open.len();
        open.retain(|r| r.state != ObjState::Picking);
        out.in_flight = out.open - open.len();
        out.kept = settle(&tx, &open, now_ns, reach_end_x_m, actor, &mut out.events).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// Expiry, between requests: an object still DETECTED or ASSIGNED,
    /// unchanged for `unchanged_ns`, whose predicted position is past
    /// `reach_end_x_m`, has left the cell with nobody to settle it (its
    /// track was lost with a tracker restart, or its scheduler went away):
    /// it goes to MISSED (an assignment revoked first); and one PICKING,
    /// unchanged for three times that, lost its CNC's answer: MISSED, its
    /// outcome unknown. As `actor` at `now_ns`, in one transaction.
    /// Returns the transitions made.
    pub fn expire(
        &mut self,
        now_ns: i64,
        unchanged_ns: i64,
        reach_end_x_m: f64,
        actor: &str,
    ) -> Result<Vec<Event>, StoreError> {
        let e = sql_error(&self.path, "expiring objects");
        let capped = self.capped;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let run = |tx: &rusqlite::Transaction| -> rusqlite::Result<Vec<Event>> {
            // A pick takes seconds; one unchanged for three times the
            // timeout was lost with its CNC's answer (a store that could
            // not take it), and its outcome is unknown.
            let mut stmt = tx.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE \
                 (state IN ({}, {}) AND updated_at_ns <= ?1) \
                 OR (state = {} AND updated_at_ns <= ?2) ORDER BY last_seq",
                ObjState::Detected.id(),
                ObjState::Assigned.id(),
                ObjState::Picking.id()
            ))?;
            let records = stmt
                .query_map(
                    [
                        now_ns.saturating_sub(unchanged_ns),
                        now_ns.saturating_sub(unchanged_ns.saturating_mul(3)),
                    ],
                    record_of,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut events = Vec::new();
            if !records.is_empty() {
                check_room(tx, capped)?;
            }
            settle_with(
                tx,
                &records,
                now_ns,
                reach_end_x_m,
                actor,
                &mut events,
                expiry,
            )?;
            Ok(events)
        };
        let out = run(&tx).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// Retention: removes at most `batch` terminal objects last changed
    /// before `before_ns`, with their transitions, and at most `batch`
    /// remembered request answers older than that. One short transaction,
    /// so requests wait for a batch at most; call again while `more`.
    pub fn prune(&mut self, before_ns: i64, batch: usize) -> Result<Pruned, StoreError> {
        let e = sql_error(&self.path, "pruning old objects");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let terminal: Vec<String> = ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.id().to_string())
            .collect();
        let run = |tx: &rusqlite::Transaction| -> rusqlite::Result<Pruned> {
            let mut stmt = tx.prepare(&format!(
                "SELECT id, last_seq FROM objects WHERE updated_at_ns < ?1 AND state IN ({}) \
                 ORDER BY updated_at_ns LIMIT ?2",
                terminal.join(",")
            ))?;
            let old = stmt
                .query_map(params![before_ns, batch as i64], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Pruned::default();
            let mut through = 0i64;
            for (id, last_seq) in &old {
                out.transitions +=
                    tx.execute("DELETE FROM transitions WHERE object_id = ?1", [id])?;
                out.objects += tx.execute("DELETE FROM objects WHERE id = ?1", [id])?;
                through = through.max(*last_seq);
            }
            if through > 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                    params![PRUNED_THROUGH_SEQ, through],
                )?;
            }
            out.requests = tx.execute(
                "DELETE FROM requests WHERE request_id IN \
                 (SELECT request_id FROM requests WHERE at_ns < ?1 LIMIT ?2)",
                params![before_ns, batch as i64],
            )?;
            out.more = old.len() == batch || out.requests == batch;
            Ok(out)
        };
        let out = run(&tx).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// A CNC's current epoch (0: never activated).
    pub fn epoch(&self, cnc_id: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT epoch FROM cnc_epochs WHERE cnc_id = ?1",
                [cnc_id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|e| e.unwrap_or(0) as u64)
            .map_err(self.err("reading an epoch"))
    }

    pub fn get(&self, object_id: &[u8; 16]) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM objects WHERE id = ?1"),
                [object_id.as_slice()],
                record_of,
            )
            .optional()
            .map_err(self.err("reading an object"))
    }

    /// Objects matching `f`, oldest detection first; true if `limit` cut the list.
    pub fn list(&self, f: &Filter) -> Result<(Vec<Record>, bool), StoreError> {
        let states: Vec<String> = f.states.iter().map(|s| s.id().to_string()).collect();
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM objects WHERE 1");
        if !states.is_empty() {
            sql += &format!(" AND state IN ({})", states.join(","));
        }
        let mut args: Vec<i64> = Vec::new();
        if let Some(l) = f.lane {
            args.push(l as i64);
            sql += &format!(" AND lane = ?{}", args.len());
        }
        if let Some(a) = f.detected_after_ns {
            args.push(a);
            sql += &format!(" AND detected_at_ns > ?{}", args.len());
        }
        if let Some(b) = f.detected_before_ns {
            args.push(b);
            sql += &format!(" AND detected_at_ns < ?{}", args.len());
        }
        let limit = if f.limit == 0 { 1000 } else { f.limit };
        sql += &format!(" ORDER BY detected_at_ns, id LIMIT {}", limit + 1);
        let read = || -> rusqlite::Result<Vec<Record>> {
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), record_of)?;
            rows.collect()
        };
        let mut out = read().map_err(self.err("listing objects"))?;
        let truncated = out.len() > limit;
        out.truncate(limit);
        Ok((out, truncated))
    }

    /// An object's transitions, oldest first (empty: no such object).
    pub fn history(&self, object_id: &[u8; 16]) -> Result<Vec<Event>, StoreError> {
        let read = || -> rusqlite::Result<Vec<Event>> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM transitions WHERE object_id = ?1 ORDER BY seq"
            ))?;
            let rows = stmt.query_map([object_id.as_slice()], event_of)?;
            rows.collect()
        };
        read().map_err(self.err("reading a history"))
    }

    /// The events after `after_seq`, oldest first, at most `limit`.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let read = || -> rusqlite::Result<Vec<Event>> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM transitions WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after_seq as i64, limit as i64], event_of)?;
            rows.collect()
        };
        read().map_err(self.err("reading events"))
    }

    /// The object's state as its transitions say it was at `at_ns` (or
    /// now), rebuilt from the audit trail alone; `None` before it existed.
    pub fn replay(
        &self,
        object_id: &[u8; 16],
        at_ns: Option<i64>,
    ) -> Result<Option<ObjState>, StoreError> {
        let mut state = None;
        for e in self.history(object_id)? {
            if at_ns.is_some_and(|t| e.at_ns > t) {
                break;
            }
            state = Some(e.to);
        }
        Ok(state)
    }

    /// The seq of the latest event (0: none yet), even if retention has
    /// removed it.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        high_seq(&self.conn).map_err(self.err("reading the last seq"))
    }
}

/// Brings each of `open` to a state no CNC holds ([`reconcile`]), as
/// `actor` at `now_ns`: the transitions are written and pushed onto
/// `events`. Returns how many stay open (DETECTED, still reachable). An
/// object is still reachable if its position predicted for `now_ns` (from
/// where and when it was seen, at its registered velocity) is upstream of
/// `reach_end_x_m`.
fn settle(
    tx: &rusqlite::Transaction,
    open: &[Record],
    now_ns: i64,
    reach_end_x_m: f64,
    actor: &str,
    events: &mut Vec<Event>,
) -> rusqlite::Result<usize> {
    settle_with(tx, open, now_ns, reach_end_x_m, actor, events, reconcile)
}

type Steps = &'static [(ObjState, ObjState, &'static str)];

/// Expiry's steps ([`Store::expire`]): only what is out of reach moves.
fn expiry(state: ObjState, reachable: bool) -> Steps {
    use ObjState::*;
    const MISSED: (ObjState, ObjState, &str) = (
        Detected,
        Missed,
        "expired: past the last reach window, unchanged, and nobody settled it",
    );
    match (state, reachable) {
        (Detected, false) => &[MISSED],
        (Assigned, false) => &[
            (
                Assigned,
                Detected,
                "expired: assignment revoked (out of reach)",
            ),
            MISSED,
        ],
        (Picking, _) => &[(
            Picking,
            Missed,
            "expired: a pick unchanged for three times the timeout; its outcome is unknown",
        )],
        _ => &[],
    }
}

/// As [`settle`], with the steps for each (state, still reachable).
fn settle_with(
    tx: &rusqlite::Transaction,
    open: &[Record],
    now_ns: i64,
    reach_end_x_m: f64,
    actor: &str,
    events: &mut Vec<Event>,
    steps_of: fn(ObjState, bool) -> Steps,
) -> rusqlite::Result<usize> {
    let mut kept = 0;
    let mut seq = next_seq(tx)?;
    for r in open {
        let x_m = predicted_x_m(r, now_ns);
        let steps = steps_of(r.state, x_m < reach_end_x_m);
        if steps.is_empty()
            || apply(tx, r, steps, x_m, actor, now_ns, &mut seq, events)? == ObjState::Detected
        {
            kept += 1;
        }
    }
    Ok(kept)
}

/// Where `r` is predicted at `now_ns`: where it was seen, moved at its
/// registered velocity.
fn predicted_x_m(r: &Record, now_ns: i64) -> f64 {
    let s = &r.seen;
    let dt_s = (now_ns.saturating_sub(s.detected_at_ns)).max(0) as f64 * 1e-9;
    s.x_m + s.velocity_x_mps * dt_s
}

/// Records the chain `steps` (legal, starting at `r`'s state) as `actor`
/// at `now_ns`, from seq `*seq` on, in `r`'s epoch, and leaves the object
/// in the last step's state (held by nobody once revoked). Returns that
/// state.
#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &rusqlite::Transaction,
    r: &Record,
    steps: &[(ObjState, ObjState, &str)],
    x_m: f64,
    actor: &str,
    now_ns: i64,
    seq: &mut u64,
    events: &mut Vec<Event>,
) -> rusqlite::Result<ObjState> {
    let mut holder = r.cnc_id.clone();
    let mut last = r.state;
    for &(from, to, reason) in steps {
        let ev = Event {
            seq: *seq,
            object_id: r.object_id,
            from: Some(from),
            to,
            actor: actor.into(),
            cnc_id: holder.clone(),
            epoch: r.epoch,
            reason: reason.into(),
            belt_position_m: x_m,
            at_ns: now_ns,
        };
        insert_event(tx, &ev)?;
        events.push(ev);
        *seq += 1;
        last = to;
        if to == ObjState::Detected {
            holder.clear();
        }
    }
    tx.execute(
        "UPDATE objects SET state = ?2, cnc_id = ?3, updated_at_ns = ?4, last_seq = ?5 \
         WHERE id = ?1",
        params![
            r.object_id.as_slice(),
            last.id() as i64,
            holder,
            now_ns,
            (*seq - 1) as i64
        ],
    )?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by the first schema is migrated in place, and
    /// what it held is still there.
    #[test]
    fn a_version_1_database_is_migrated_keeping_its_rows() {
        let dir = std::env::temp_dir().join(format!("cncpick-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO transitions VALUES (7, x'00112233445566778899aabbccddeeff', 0, 1, \
                 'tracker', '', 0, 'registered', 0.5, 10)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO requests (request_id, answer) VALUES ('r', '{}')",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 2);
        assert_eq!(s.last_seq().unwrap(), 7);
        let at: i64 = s
            .conn
            .query_row(
                "SELECT at_ns FROM requests WHERE request_id = 'r'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(at, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
