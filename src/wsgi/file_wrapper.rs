//! `wsgi.file_wrapper` (PEP 3333 "Optional Platform-Specific File Handling"). When the app returns one whose
//! file has a real descriptor, the server sends it with sendfile(2); otherwise it is iterated in blocks.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(frozen, module = "rustwsgi._rustwsgi")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        let empty = match block.cast::<PyBytes>() {
            Ok(bytes) => bytes.as_bytes().is_empty(),
            Err(_) => block.len()? == 0,
        };
        Ok((!empty).then_some(block))
    }

    /// Closes the wrapped file if it has a `close` method.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(close) = self.filelike.bind(py).getattr_opt(pyo3::intern!(py, "close"))? {
            close.call0()?;
        }
        Ok(())
    }
}
