//! A queue of work that grows while it is done, shared by a few threads: the tree walks (the
//! context, the clone of a snapshot) hand out directories, and reading one directory queues the
//! directories below it. On this kind of machine a tree walk is bound by per-file system calls,
//! so two threads nearly halve it.

use std::sync::{Condvar, Mutex};

/// Runs `work` on every item of `start` and on every item it queues, on `threads` threads (the
/// caller's included). `work` gets one item and a list to push further items onto. The first
/// error stops the queue and is returned; items still queued are dropped.
pub(crate) fn run<T: Send, E: Send>(
    threads: usize,
    start: Vec<T>,
    work: impl Fn(T, &mut Vec<T>) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let queue = Queue {
        state: Mutex::new(State {
            todo: start,
            busy: 0,
            error: None,
        }),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            scope.spawn(|| queue.work(&work));
        }
        queue.work(&work);
    });
    let state = queue.state.into_inner().unwrap_or_else(|e| e.into_inner());
    match state.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Queue<T, E> {
    state: Mutex<State<T, E>>,
    /// Signalled when work is queued or the last busy worker finishes.
    changed: Condvar,
}

struct State<T, E> {
    todo: Vec<T>,
    /// Items being worked on: while any is, more may be queued.
    busy: usize,
    /// The first error; the queue stops.
    error: Option<E>,
}

impl<T, E> Queue<T, E> {
    /// Takes items until none is left and none is being worked on (or one failed).
    fn work(&self, work: &impl Fn(T, &mut Vec<T>) -> Result<(), E>) {
        let mut more = Vec::new();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.error.is_some() {
                return;
            }
            let Some(item) = state.todo.pop() else {
                if state.busy == 0 {
                    return;
                }
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            state.busy += 1;
            drop(state);
            let result = work(item, &mut more);
            state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.busy -= 1;
            match result {
                Ok(()) => state.todo.append(&mut more),
                Err(e) => {
                    state.error.get_or_insert(e);
                }
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_queued_item_is_worked_once() {
        // A binary tree of depth 10 given as numbers: n queues 2n and 2n+1 below 1024.
        let seen = Mutex::new(Vec::new());
        let result: Result<(), ()> = run(3, vec![1u32], |n, more| {
            seen.lock().unwrap().push(n);
            if n < 1024 {
                more.extend([2 * n, 2 * n + 1]);
            }
            Ok(())
        });
        assert_eq!(result, Ok(()));
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (1..2048).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_error_stops_the_queue() {
        let worked = AtomicUsize::new(0);
        let result = run(2, (0..1000).collect(), |n: u32, _| {
            worked.fetch_add(1, Ordering::Relaxed);
            if n == 990 { Err(n) } else { Ok(()) }
        });
        assert_eq!(result, Err(990));
        // Items are taken from the end: 999..990 and at most one more per thread.
        assert!(worked.load(Ordering::Relaxed) < 20);
    }
}
