//! rustwsgi's extension module `rustwsgi._rustwsgi`: module registration only.

pub mod bindings;
pub mod config;
pub mod http;
pub mod server;
pub mod sys;
pub mod wsgi;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _rustwsgi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<bindings::PyServer>()?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::start_response::StartResponse>()?;
    Ok(())
}
