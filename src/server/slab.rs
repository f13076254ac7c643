//! The table of open connections, indexed by their poll token.

use std::sync::Arc;

use parking_lot::Mutex;

use super::connection::Conn;

/// Open connections by token; freed slots are reused.
#[derive(Debug, Default)]
pub struct Slab {
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Option<Arc<Conn>>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    /// Stores the connection built by `make(token)` and returns it.
    pub fn insert(&self, make: impl FnOnce(usize) -> Conn) -> Arc<Conn> {
        let mut entries = self.inner.lock();
        let token = entries.free.pop().unwrap_or(entries.slots.len());
        let conn = Arc::new(make(token));
        if token == entries.slots.len() {
            entries.slots.push(Some(conn.clone()));
        } else {
            entries.slots[token] = Some(conn.clone());
        }
        entries.len += 1;
        conn
    }

    #[must_use]
    pub fn get(&self, token: usize) -> Option<Arc<Conn>> {
        self.inner.lock().slots.get(token).and_then(Clone::clone)
    }

    /// Forgets the connection; events still queued for its token are then ignored.
    pub fn remove(&self, conn: &Conn) {
        let mut entries = self.inner.lock();
        if let Some(slot) = entries.slots.get_mut(conn.token) {
            if slot.as_ref().is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), conn)) {
                *slot = None;
                entries.free.push(conn.token);
                entries.len -= 1;
            }
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every open connection.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.inner.lock().slots.iter().flatten().cloned().collect()
    }
}
