//! The `Server` class Python constructs: takes the app, the listening sockets and the settings, and runs the
//! Rust server. This file and `wsgi/` are the only places where Python and the server meet.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::ServerConfig;
use crate::http::forwarded::TrustedProxies;
use crate::server::listener::Listener;
use crate::sys::dup_owned;
use crate::wsgi::call::App;
use crate::wsgi::consts::PyConsts;
use crate::wsgi::environ::{EnvironRules, EnvironTemplate};
use crate::wsgi::WsgiHandler;

#[pyclass(frozen, module = "rustwsgi._rustwsgi", name = "Server")]
pub struct PyServer {
    inner: crate::server::Server,
    handler: Arc<WsgiHandler>,
}

#[pymethods]
impl PyServer {
    /// `listeners`: (fd, `is_unix`, `base_environ`) for each bound, listening socket; the fd is duplicated.
    #[new]
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments as owned values
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        listeners: Vec<(i32, bool, Bound<'_, PyDict>)>,
        config: ServerConfig,
    ) -> PyResult<Self> {
        let consts = PyConsts::new(py);
        let mut sockets = Vec::with_capacity(listeners.len());
        let mut templates = Vec::with_capacity(listeners.len());
        for (fd, is_unix, environ) in listeners {
            let owned = dup_owned(fd).map_err(|e| PyOSError::new_err(e.to_string()))?;
            sockets.push(Listener::from_fd(owned, is_unix).map_err(|e| PyOSError::new_err(e.to_string()))?);
            templates.push(EnvironTemplate::new(&consts, &environ)?);
        }
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("rustwsgi.error",))?
            .unbind();
        let trusted = TrustedProxies::parse(&config.forwarded_allow_ips).map_err(PyValueError::new_err)?;
        let rules = EnvironRules {
            trusted,
            root_path: config.root_path.trim_end_matches('/').as_bytes().to_vec(),
        };
        let inner =
            crate::server::Server::new(sockets, config.loop_config()).map_err(|e| PyOSError::new_err(e.to_string()))?;
        let app = App {
            app,
            consts,
            templates,
            logger,
            rules,
            empty_input: Py::new(py, crate::wsgi::input::Input::empty())?,
            body_pace: config.body_pace(),
            write_timeout: config.write_timeout(),
            access_log: config.access_log,
        };
        Ok(PyServer {
            inner,
            handler: Arc::new(WsgiHandler { app }),
        })
    }

    /// Starts the server threads and returns.
    fn start(&self) -> PyResult<()> {
        self.inner
            .start(&(self.handler.clone() as Arc<dyn crate::server::Handler>))
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Waits up to `timeout` seconds, outside the interpreter; True once the server has stopped.
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
        py.detach(|| self.inner.wait(timeout))
    }

    /// Begins shutting down; graceful finishes the requests in progress first.
    #[pyo3(signature = (graceful=true))]
    fn shutdown(&self, graceful: bool) {
        self.inner.shutdown(graceful);
    }

    /// True once the server began stopping (by `shutdown` or after `max_requests`).
    fn draining(&self) -> bool {
        self.inner.draining()
    }

    /// Counters: `timed_out` (requests that passed `--timeout`), `stuck` (those still in the app), `shed`
    /// (answered 503 for lack of capacity).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (timed_out, stuck) = self.inner.deadline_stats();
        let stats = PyDict::new(py);
        stats.set_item("timed_out", timed_out)?;
        stats.set_item("stuck", stuck)?;
        stats.set_item("shed", self.inner.shed_count())?;
        Ok(stats)
    }

    /// Open client connections.
    fn connection_count(&self) -> usize {
        self.inner.connection_count()
    }
}
