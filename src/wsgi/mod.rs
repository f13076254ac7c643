//! The WSGI side of the server (PEP 3333): everything that touches Python lives under this folder.

pub mod call;
pub mod consts;
pub mod environ;
pub mod file_wrapper;
pub mod input;
pub mod start_response;

use pyo3::prelude::*;

use crate::http::response::encode_simple;
use crate::server::deadline::Overdue;
use crate::server::{Control, Exchange, Handler, Outcome, Worker};

use call::App;

/// Serves requests by calling a WSGI application; one per server.
pub struct WsgiHandler {
    pub app: App,
}

impl Handler for WsgiHandler {
    fn thread_scope(&self, body: &mut dyn FnMut(&dyn Worker)) {
        // One attach for the thread's whole life keeps its Python thread state, and so `threading.local`
        // data such as Django's database connections, from one request to the next.
        Python::attach(|py| body(&PyWorker { py, app: &self.app }));
    }
}

struct PyWorker<'a, 'py> {
    py: Python<'py>,
    app: &'a App,
}

impl Worker for PyWorker<'_, '_> {
    fn blocking(&self, f: &mut (dyn FnMut() + Send)) {
        self.py.detach(f);
    }

    fn handle(&self, exchange: &mut Exchange, control: &dyn Control) -> Outcome {
        self.app.serve(self.py, exchange, control)
    }

    fn report_overdue(&self, overdue: &[Overdue]) {
        for request in overdue {
            self.app.report_overdue(self.py, request);
        }
    }

    fn on_panic(&self, exchange: &mut Exchange) {
        let response = encode_simple(1, b"500 Internal Server Error", b"Internal Server Error", false);
        exchange.conn.io.lock().write_nonblocking(&response);
    }
}
