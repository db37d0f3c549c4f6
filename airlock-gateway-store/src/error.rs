//! What a store call can fail with: the gateway answers each differently
//! (unavailable: retry later; conflict, not-found and refused: the caller's
//! mistake, or another caller was first).

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The object is not in a state that allows the change (a request already decided).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    pub(crate) fn other(message: impl std::fmt::Display) -> StoreError {
        StoreError::Other(anyhow::anyhow!("{message}"))
    }
}
