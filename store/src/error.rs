use eci_core::{AllocationError, IllegalTransition, PlacementError};

/// Why a store operation failed. Variants name what went wrong in product terms so that the API can
/// map each to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database named in the configuration could not be reached or opened.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A statement failed for a reason that is not a constraint (those are [`Error::Conflict`]).
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// A stored value could not be read back as the type it was written from.
    #[error("a stored {what} could not be read: {why}")]
    Corrupt {
        /// What kind of value it was.
        what: &'static str,
        /// Why it could not be read.
        why: String,
    },
    /// The record asked for does not exist, or belongs to another tenant.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of record (`batch`, `instance`, `IDC`...).
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A unique or foreign-key constraint refused the write.
    #[error("{what} conflicts with an existing one (constraint `{constraint}`)")]
    Conflict {
        /// What kind of record was being written.
        what: &'static str,
        /// The constraint that refused it, or the database's message when it names none.
        constraint: String,
    },
    /// An idempotency key came back with a different request than the one it was first used with.
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyMismatch(String),
    /// The fleet, the ledger or the quota leaves too little room for the request.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The reservation a batch names cannot serve it (ended, or another size or runtime).
    #[error("the reservation cannot serve this batch: {0}")]
    ReservationMismatch(String),
    /// A state change that the lifecycle rules refuse was asked for.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// The group changed (a PATCH, another scaler) since the decision being written was made.
    #[error("group `{0}` changed since this change was decided; decide again")]
    StaleGeneration(String),
    /// Concurrent requests kept taking the capacity a plan was made for; the caller may retry.
    #[error("the ledger kept changing under concurrent requests; try again")]
    Contention,
    /// A price for the catalogue was refused.
    #[error("{0}")]
    InvalidPrice(String),
    /// Rating an instance's time against the catalogue failed.
    #[error(transparent)]
    Rating(#[from] eci_billing::RatingError),
    /// A usage window was not a valid span of time.
    #[error("invalid time window: {0}")]
    Window(#[from] eci_billing::WindowError),
    /// An invoice month was not a valid period.
    #[error("invalid period: {0}")]
    Period(#[from] eci_billing::PeriodError),
    /// Risk control's rules were refused: they could not hold.
    #[error("invalid risk rules: {0}")]
    InvalidRules(#[source] eci_core::risk::RulesError),
    /// The instance, batch or group (or something in it) is labelled
    /// `eci.io/delete-protection=always`.
    #[error(
        "{what} `{id}` is protected from deletion (label eci.io/delete-protection=always); remove the label first"
    )]
    DeleteProtected {
        /// What is protected (`instance`, `batch`, `group`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request would end more than the bulk guard allows without confirming the number.
    #[error("this would end {count} of the tenant's {live} live instances; confirm with ?confirm={count}")]
    ConfirmationRequired {
        /// How many instances it would end: the number to confirm.
        count: u64,
        /// How many live instances the tenant has.
        live: u64,
    },
    /// A deletion window is full, or its breaker open.
    #[error(
        "deletions are held by the `{}` breaker ({} deletions per {} s, {} used); it closes when an admin resets it",
        .0.window, .0.budget.deletions, .0.budget.window_seconds, .0.used
    )]
    DeletionRateLimited(Box<crate::coordination::Refusal>),
    /// A held operation cannot be approved.
    #[error("hold `{id}` cannot be approved: {why}")]
    HoldNotApprovable {
        /// The hold.
        id: String,
        /// Why not.
        why: &'static str,
    },
    /// Redis, which shares rate windows between replicas, could not be reached.
    #[error("cannot reach the coordination store")]
    Coordination(#[source] redis::RedisError),
}

impl From<AllocationError> for Error {
    fn from(e: AllocationError) -> Self {
        match e {
            AllocationError::Placement(p) => Error::Placement(p),
            mismatch => Error::ReservationMismatch(mismatch.to_string()),
        }
    }
}

/// The store's result type.
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
