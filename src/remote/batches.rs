//! Objects staged in batches while many threads fetch them: each full
//! batch is published (made durable, then renamed into the store) by a
//! publisher while the workers go on filling the next one, so no worker
//! waits for the disk or for another worker's object. An interrupted pull
//! keeps every batch published before it stopped.

use std::io;
use std::mem;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::objects::{ObjectStore, Staging};

/// A batch is full after this many objects, or this long: the first bounds
/// what an interruption costs, the second how long an object waits to be
/// published.
const BATCH: usize = 2048;
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The batch being filled; full ones go to `full`, whose receiver
/// publishes them one at a time.
pub struct Batches<'s> {
    objects: &'s ObjectStore,
    current: Mutex<Batch<'s>>,
    full: SyncSender<Staging<'s>>,
}

struct Batch<'s> {
    /// Each worker holds a reference while it writes an object into the
    /// batch; whoever lets go of the last one hands the batch on, so a
    /// batch is published only once nobody writes to it.
    staging: Arc<Staging<'s>>,
    objects: usize,
    since: Instant,
    /// The batch this one replaced, while a worker still writes into it.
    /// This one is not closed until then: each open staging area holds
    /// hundreds of descriptors, and a server sending some objects slowly
    /// would otherwise keep one batch open per worker.
    previous: Weak<Staging<'s>>,
}

impl<'s> Batch<'s> {
    fn new(staging: Staging<'s>, previous: Weak<Staging<'s>>) -> Batch<'s> {
        Batch {
            staging: Arc::new(staging),
            objects: 0,
            since: Instant::now(),
            previous,
        }
    }
}

impl<'s> Batches<'s> {
    pub fn new(objects: &'s ObjectStore, full: SyncSender<Staging<'s>>) -> io::Result<Self> {
        Ok(Batches {
            current: Mutex::new(Batch::new(objects.staging()?, Weak::new())),
            objects,
            full,
        })
    }

    /// The batch to write the next object into; give it back with
    /// [`Batches::added`] or [`Batches::release`].
    pub fn staging(&self) -> Arc<Staging<'s>> {
        Arc::clone(&self.current().staging)
    }

    /// An object was written into `staging`: give it back, and start a new
    /// batch if the current one is full.
    pub fn added(&self, staging: Arc<Staging<'s>>) -> io::Result<()> {
        let full = self.take_if_full();
        // Let go first whatever happened: a batch dropped by its last
        // holder is removed with the verified objects in it.
        self.release(staging)?;
        full?.map_or(Ok(()), |full| self.release(full))
    }

    /// Count one object into the current batch; if it is full (and the
    /// one before is no longer written into), put a new one in its place
    /// and return the full one.
    fn take_if_full(&self) -> io::Result<Option<Arc<Staging<'s>>>> {
        let mut current = self.current();
        current.objects += 1;
        let full = current.objects >= BATCH || current.since.elapsed() >= PUBLISH_EVERY;
        if !full || current.previous.strong_count() > 0 {
            return Ok(None);
        }
        let next = Batch::new(self.objects.staging()?, Arc::downgrade(&current.staging));
        Ok(Some(mem::replace(&mut *current, next).staging))
    }

    /// Give back a batch, nothing added to it by this holder.
    pub fn release(&self, staging: Arc<Staging<'s>>) -> io::Result<()> {
        hand_on(&self.full, staging)
    }

    /// Hand on the last batch, once every worker is done with it.
    pub fn finish(self) -> io::Result<()> {
        let Batches { current, full, .. } = self;
        let last = current.into_inner().unwrap_or_else(|e| e.into_inner());
        hand_on(&full, last.staging)
    }

    fn current(&self) -> MutexGuard<'_, Batch<'s>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Let go of a batch; its last holder passes it on to be published.
fn hand_on<'s>(full: &SyncSender<Staging<'s>>, staging: Arc<Staging<'s>>) -> io::Result<()> {
    match Arc::into_inner(staging) {
        Some(batch) => full.send(batch).map_err(|_| {
            io::Error::other("publishing stopped: an earlier batch failed to publish")
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, TryRecvError};

    use super::*;

    /// An empty store in a new directory (which goes with it).
    fn new_store() -> (tempfile::TempDir, ObjectStore) {
        let root = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(root.path().join("objects")).unwrap();
        (root, store)
    }

    /// `n` objects added, each by a holder of its own; the first error.
    fn add(batches: &Batches, n: usize) -> io::Result<()> {
        (0..n).try_for_each(|_| batches.added(batches.staging()))
    }

    #[test]
    fn a_full_batch_is_handed_on_by_its_last_holder_and_the_last_by_finish() {
        let (_root, store) = new_store();
        let (full, to_publish) = sync_channel(4);
        let batches = Batches::new(&store, full).unwrap();
        let writing = batches.staging();
        add(&batches, BATCH).unwrap();
        assert!(
            to_publish.try_recv().is_err(),
            "a full batch was handed on while a worker still wrote to it"
        );
        batches.release(writing).unwrap();
        to_publish.try_recv().expect("the full batch, once let go");
        batches.added(batches.staging()).unwrap();
        assert!(
            to_publish.try_recv().is_err(),
            "a batch not full was handed on"
        );
        batches.finish().unwrap();
        to_publish.try_recv().expect("the last batch");
        assert_eq!(
            to_publish.try_recv().err(),
            Some(TryRecvError::Disconnected)
        );
    }

    #[test]
    fn a_batch_is_not_closed_while_the_one_before_is_written_into() {
        let (_root, store) = new_store();
        let (full, to_publish) = sync_channel(4);
        let batches = Batches::new(&store, full).unwrap();
        let writing = batches.staging();
        add(&batches, BATCH).unwrap();
        add(&batches, 2 * BATCH).unwrap();
        assert!(
            to_publish.try_recv().is_err(),
            "a batch was closed and handed on while the one before was still written into"
        );
        batches.release(writing).unwrap();
        to_publish.try_recv().expect("the first batch, once let go");
        add(&batches, 1).unwrap();
        to_publish
            .try_recv()
            .expect("the second, closed with the next object");
    }

    #[test]
    fn a_batch_that_cannot_be_followed_stays_open() {
        let (root, store) = new_store();
        let (full, to_publish) = sync_channel(4);
        let batches = Batches::new(&store, full).unwrap();
        add(&batches, BATCH - 1).unwrap();
        // No new staging area can be made: the full batch stays current,
        // its objects kept, not removed.
        let gone = root.path().join("gone");
        std::fs::rename(store.root(), &gone).unwrap();
        add(&batches, 1).expect_err("no staging area can be made");
        assert!(to_publish.try_recv().is_err());
        std::fs::rename(&gone, store.root()).unwrap();
        add(&batches, 1).unwrap();
        to_publish
            .try_recv()
            .expect("the full batch, once the next could be started");
    }

    #[test]
    fn workers_stop_once_publishing_has() {
        let (_root, store) = new_store();
        let (full, to_publish) = sync_channel(4);
        let batches = Batches::new(&store, full).unwrap();
        drop(to_publish);
        let e = add(&batches, BATCH).expect_err("a full batch with nobody to publish it");
        assert!(e.to_string().contains("publishing stopped"), "{e}");
        assert!(batches.finish().is_err());
    }
}
