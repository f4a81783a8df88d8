//! The error a chaos layer injects.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::OnceLock;

/// An error injected by a [`Chaos`](super::Chaos) service: the inner service was not called.
///
/// Found with `downcast_ref::<InjectedFault>()` on the layer's `BoxError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    kind: FaultKind,
}

/// Which fault an [`InjectedFault`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// An error ([`Faults::error`](super::Faults::error)).
    Error,
    /// A dropped connection ([`Faults::disconnect`](super::Faults::disconnect)).
    Disconnect,
}

impl InjectedFault {
    /// An injected error.
    pub const fn error() -> Self {
        Self {
            kind: FaultKind::Error,
        }
    }

    /// An injected dropped connection.
    pub const fn disconnect() -> Self {
        Self {
            kind: FaultKind::Disconnect,
        }
    }

    /// Which fault this is.
    pub const fn kind(&self) -> FaultKind {
        self.kind
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::Error => f.write_str("injected fault"),
            FaultKind::Disconnect => f.write_str("injected fault: connection reset"),
        }
    }
}

impl StdError for InjectedFault {
    /// A dropped connection's source is an [`io::Error`] of kind `ConnectionReset`, as a real
    /// one's is, so that classifiers that walk the source chain see a connection error.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        static RESET: OnceLock<io::Error> = OnceLock::new();
        match self.kind {
            FaultKind::Error => None,
            FaultKind::Disconnect => {
                Some(RESET.get_or_init(|| io::Error::from(io::ErrorKind::ConnectionReset)))
            }
        }
    }
}
