//! A runtime-independent gate: futures wait until it is opened.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

/// A gate that handler futures wait on until a test opens it; works on any executor.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    inner: Arc<Mutex<GateState>>,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    wakers: Vec<Waker>,
}

impl Gate {
    /// A closed gate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        let wakers = {
            let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            state.open = true;
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the gate is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
    }

    /// Resolves once the gate is open.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        std::future::poll_fn(move |cx| {
            let mut state = inner.lock().unwrap_or_else(PoisonError::into_inner);
            if state.open {
                Poll::Ready(())
            } else {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
    }
}
