use eci_core::{IllegalTransition, PlacementError};

/// Why a store operation failed. Variants name what went wrong in product terms so that the API can
/// map each to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    #[error("a stored {what} could not be read: {why}")]
    Corrupt { what: &'static str, why: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} conflicts with an existing one (constraint `{constraint}`)")]
    Conflict { what: &'static str, constraint: String },
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyMismatch(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("the reservation cannot serve this batch: {0}")]
    ReservationMismatch(String),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("the ledger kept changing under concurrent requests; try again")]
    Contention,
    #[error("{0}")]
    InvalidPrice(String),
    #[error(transparent)]
    Rating(#[from] eci_billing::RatingError),
    #[error("invalid time window: {0}")]
    Window(#[from] eci_billing::WindowError),
    #[error("invalid period: {0}")]
    Period(#[from] eci_billing::PeriodError),
    #[error("cannot reach the coordination store")]
    Coordination(#[source] redis::RedisError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    /// Unique and foreign-key violations become conflicts that name the constraint, never a bare
    /// query failure.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let constraint = db.constraint().map(str::to_string).unwrap_or_else(|| db.message().to_string());
            if db.is_unique_violation() {
                return Error::Conflict { what: "record", constraint };
            }
            if db.is_foreign_key_violation() {
                return Error::Conflict { what: "reference", constraint };
            }
        }
        Error::Query(e)
    }
}
