//! Where simulated clusters keep their objects beyond the process, as a real IDC outlives the control
//! plane: one SQLite file shared by every cluster of a process (one connection, three descriptors,
//! however many clusters), one row per object and the last resourceVersion per cluster.
//!
//! Every change is written before the store applies it in memory, in one transaction with the
//! cluster's resourceVersion, so a process killed at any moment comes back with each cluster as it
//! was after its last acknowledged write. The change history is not kept: a restarted cluster starts
//! with an empty one, so a watch resuming from before the restart gets `410 Expired` and relists,
//! as after an etcd compaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use thiserror::Error;

use crate::resource::Resource;

/// Why the objects file could not be opened, read or written.
#[derive(Debug, Error)]
pub enum DurableError {
    /// The file could not be opened or its tables made.
    #[error("opening the simulated clusters' objects file {path}")]
    OpenFailed {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A cluster's objects could not be read back.
    #[error("reading the objects of simulated cluster {cluster}")]
    LoadFailed {
        /// The cluster's name.
        cluster: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row names a resource this simulator does not serve, or is not JSON.
    #[error("simulated cluster {cluster} has an unreadable object {what}")]
    CorruptObject {
        /// The cluster's name.
        cluster: String,
        /// Which row.
        what: String,
    },
    /// A change could not be written.
    #[error("writing a change of simulated cluster {cluster}")]
    WriteFailed {
        /// The cluster's name.
        cluster: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

/// An open objects file. Cheap to share behind an `Arc`; every cluster of a process writes through
/// the same one, each under its own name.
#[derive(Debug)]
pub struct ObjectFile {
    path: PathBuf,
    connection: Mutex<Connection>,
}

/// What a cluster had when it last wrote.
#[derive(Debug, Default)]
pub struct Kept {
    /// Its last resourceVersion (0: the cluster never wrote).
    pub resource_version: u64,
    /// Its objects, as (resource, namespace or "", name, object).
    pub objects: Vec<(Resource, String, String, Value)>,
}

/// One change as written: the object after it, or `None` when it was removed.
pub(crate) struct Write<'a> {
    pub resource: Resource,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: Option<&'a Value>,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS clusters (
        name TEXT PRIMARY KEY,
        resource_version INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS objects (
        cluster TEXT NOT NULL,
        api_group TEXT NOT NULL,
        resource TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        object TEXT NOT NULL,
        PRIMARY KEY (cluster, api_group, resource, namespace, name)
    ) WITHOUT ROWID;
";

impl ObjectFile {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path) -> Result<Arc<ObjectFile>, DurableError> {
        let failed = |source| DurableError::OpenFailed { path: path.to_path_buf(), source };
        let connection = Connection::open(path).map_err(failed)?;
        // WAL with NORMAL synchronisation survives the process being killed at any moment (only an
        // OS crash may lose the last transactions), at a fraction of a full sync per write.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
            )
            .map_err(failed)?;
        connection.execute_batch(SCHEMA).map_err(failed)?;
        Ok(Arc::new(ObjectFile { path: path.to_path_buf(), connection: Mutex::new(connection) }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic cannot leave a half-written change behind: each is one SQLite transaction.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything `cluster` had written.
    pub fn load(&self, cluster: &str) -> Result<Kept, DurableError> {
        let failed = |source| DurableError::LoadFailed { cluster: cluster.to_string(), source };
        let connection = self.lock();
        let resource_version: Option<i64> = connection
            .query_row("SELECT resource_version FROM clusters WHERE name = ?1", [cluster], |row| row.get(0))
            .optional()
            .map_err(failed)?;
        let mut statement = connection
            .prepare("SELECT api_group, resource, namespace, name, object FROM objects WHERE cluster = ?1")
            .map_err(failed)?;
        let rows = statement
            .query_map([cluster], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(failed)?;
        let mut objects = Vec::new();
        for row in rows {
            let (group, plural, namespace, name, text) = row.map_err(failed)?;
            let corrupt = || DurableError::CorruptObject {
                cluster: cluster.to_string(),
                what: format!("{group}/{plural} {namespace}/{name}"),
            };
            let resource = Resource::from_plural(&group, &plural).ok_or_else(corrupt)?;
            let object = serde_json::from_str(&text).map_err(|_| corrupt())?;
            objects.push((resource, namespace, name, object));
        }
        Ok(Kept { resource_version: resource_version.map_or(0, |rv| rv as u64), objects })
    }

    /// Writes one change of `cluster` at `resource_version`, atomically.
    pub(crate) fn write(
        &self,
        cluster: &str,
        resource_version: u64,
        change: &Write<'_>,
    ) -> Result<(), DurableError> {
        let failed = |source| DurableError::WriteFailed { cluster: cluster.to_string(), source };
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(failed)?;
        let (group, plural) = (change.resource.group(), change.resource.plural());
        let written = match change.object {
            Some(object) => transaction
                .prepare_cached(
                    "INSERT INTO objects (cluster, api_group, resource, namespace, name, object) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (cluster, api_group, resource, namespace, name) \
                     DO UPDATE SET object = excluded.object",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        cluster,
                        group,
                        plural,
                        change.namespace,
                        change.name,
                        object.to_string()
                    ])
                }),
            None => transaction
                .prepare_cached(
                    "DELETE FROM objects WHERE cluster = ?1 AND api_group = ?2 AND resource = ?3 \
                     AND namespace = ?4 AND name = ?5",
                )
                .and_then(|mut s| s.execute(params![cluster, group, plural, change.namespace, change.name])),
        };
        written.map_err(failed)?;
        transaction
            .prepare_cached(
                "INSERT INTO clusters (name, resource_version) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET resource_version = excluded.resource_version",
            )
            .and_then(|mut s| s.execute(params![cluster, resource_version as i64]))
            .map_err(failed)?;
        transaction.commit().map_err(failed)
    }
}
