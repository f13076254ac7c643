//! HTTP/1.x message handling as pure byte work: request heads, body framing, response heads.
//! Nothing here touches Python or sockets, so all of it is unit-tested and fuzzable on its own.

pub mod body;
pub mod date;
pub mod error;
pub mod forwarded;
pub mod proxy_protocol;
pub mod request;
pub mod response;

pub use body::BodyDecoder;
pub use error::HttpError;
pub use request::{parse_request, BodyKind, Limits, Parsed, RequestHead};
