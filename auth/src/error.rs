use atoll_errors::{Classified, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this node requires an API key: send it as \"Authorization: Bearer KEY\"")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key was revoked")]
    Revoked,
    #[error("{0}")]
    Forbidden(String),
    #[error("a key named {0:?} exists: revoke it first, or choose another name")]
    NameTaken(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no key is named {0:?}")]
    NoSuchKey(String),
}

impl Classified for AuthError {
    fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Missing | AuthError::Invalid | AuthError::Revoked => {
                ErrorKind::Unauthenticated
            }
            AuthError::Forbidden(_) => ErrorKind::Forbidden,
            AuthError::NameTaken(_) => ErrorKind::Conflict,
            AuthError::BadRequest(_) => ErrorKind::BadInput,
            AuthError::NoSuchKey(_) => ErrorKind::NotFound,
        }
    }
}

impl AuthError {
    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Revoked => "revoked",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::NameTaken(_) | AuthError::BadRequest(_) | AuthError::NoSuchKey(_) => {
                "bad_request"
            }
        }
    }
}
