//! Why a request was refused, and the one place that maps a refusal to its status code.

use std::fmt;

/// A request the server refuses before (or while) handing it to the application.
/// Every variant ends the connection: after one of these the framing of what follows is in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed syntax or framing (RFC 9112 §2-§7).
    BadRequest(&'static str),
    /// The body is larger than `limit_request_body`.
    PayloadTooLarge,
    /// The request line is longer than `limit_request_line`.
    UriTooLong,
    /// A header line is too long or there are too many of them.
    HeaderFieldsTooLarge,
    /// A transfer coding the server does not implement (RFC 9112 §6.1).
    NotImplemented(&'static str),
}

impl HttpError {
    /// The status code and reason phrase sent for this error.
    #[must_use]
    pub fn status(self) -> (u16, &'static str) {
        let (code, reason) = self.status_line().split_at(3);
        (code.parse().unwrap_or(500), &reason[1..])
    }

    /// The status line's code and reason, as sent: `400 Bad Request`.
    #[must_use]
    pub fn status_line(self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "400 Bad Request",
            HttpError::PayloadTooLarge => "413 Content Too Large",
            HttpError::UriTooLong => "414 URI Too Long",
            HttpError::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            HttpError::NotImplemented(_) => "501 Not Implemented",
        }
    }

    /// The short explanation put in the response body.
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            HttpError::BadRequest(why) | HttpError::NotImplemented(why) => why,
            HttpError::PayloadTooLarge => "request body too large",
            HttpError::UriTooLong => "request line too long",
            HttpError::HeaderFieldsTooLarge => "request header fields too large",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_line(), self.detail())
    }
}

impl std::error::Error for HttpError {}
