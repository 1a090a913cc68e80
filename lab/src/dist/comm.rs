//! The communication thread's side: the jobs the training thread queues, the replies it
//! reads back in the same order, the loop that serves them, and the pool every large buffer is
//! taken from and given back to on the training thread.

use super::Collective;
use rewind::error::Result;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender};

/// What the training thread asks of the communication thread.
pub(super) enum Job {
    Sum(Vec<f32>),
    Stats(Vec<f64>),
    Broadcast(Vec<f32>),
    /// A bucket, how many of its values each rank owns, and room for this rank's part
    /// (buffers come from the training thread, which gives them back: see [`Pool`]).
    ReduceScatter(Vec<f32>, Vec<usize>, Vec<f32>),
    /// This rank's part, every rank's count, and room for all of them.
    AllGather(Vec<f32>, Vec<usize>, Vec<f32>),
    GatherBytes(Vec<u8>),
}

/// The answer to a [`Job`], in the order the jobs went.
pub(super) enum Reply {
    /// The result, the seconds the collective took, and the job's input when it was not
    /// the result's buffer: handed back so that the training thread, which allocated it,
    /// frees it (a large buffer freed on another thread does not return to the allocating
    /// thread's heap, and the training thread would fault in fresh pages every step).
    Floats(Vec<f32>, f64, Option<Vec<f32>>),
    Stats(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// A reply, or the transport's error as text.
pub(super) type Answer = std::result::Result<Reply, String>;

/// Buffers kept from step to step: every large buffer is taken here and given back here on
/// the training thread, so each step reuses the last one's memory instead of faulting in
/// fresh pages.
#[derive(Debug, Default, Clone)]
pub(super) struct Pool(Rc<RefCell<Vec<Vec<f32>>>>);

impl Pool {
    /// A buffer of `n` values (zeros; every user overwrites them all).
    pub(super) fn take(&self, n: usize) -> Vec<f32> {
        let mut free = self.0.borrow_mut();
        let best = (0..free.len())
            .filter(|&i| free[i].capacity() >= n)
            .min_by_key(|&i| free[i].capacity());
        let mut v = best.map(|i| free.swap_remove(i)).unwrap_or_default();
        v.clear();
        v.resize(n, 0.0);
        v
    }

    /// Keeps `v` for a later [`Pool::take`].
    pub(super) fn give(&self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.0.borrow_mut().push(v);
        }
    }
}

/// The communication thread: makes the transport, then serves jobs in order until the
/// reducer is dropped.
pub(super) fn serve(
    make: Box<dyn FnOnce() -> Result<Box<dyn Collective>> + Send>,
    jobs: Receiver<Job>,
    answers: Sender<Answer>,
    started: Sender<Result<(usize, usize)>>,
) {
    let mut c = match make() {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok((c.rank(), c.size())));
    for job in jobs {
        let answer = match job {
            Job::Sum(mut v) => {
                let t = std::time::Instant::now();
                c.all_reduce_sum(&mut v)
                    .map(|_| Reply::Floats(v, t.elapsed().as_secs_f64(), None))
            }
            Job::Broadcast(mut v) => c.broadcast(&mut v).map(|_| Reply::Floats(v, 0.0, None)),
            Job::Stats(mut v) => c.all_reduce_sum_f64(&mut v).map(|_| Reply::Stats(v)),
            Job::ReduceScatter(v, counts, mut mine) => {
                let t = std::time::Instant::now();
                check_parts(c.as_ref(), &counts, v.len(), mine.len())
                    .and_then(|_| c.reduce_scatter_sum(&v, &counts, &mut mine))
                    .map(|_| Reply::Floats(mine, t.elapsed().as_secs_f64(), Some(v)))
            }
            Job::AllGather(v, counts, mut all) => {
                let t = std::time::Instant::now();
                check_parts(c.as_ref(), &counts, all.len(), v.len())
                    .and_then(|_| c.all_gather(&v, &counts, &mut all))
                    .map(|_| Reply::Floats(all, t.elapsed().as_secs_f64(), Some(v)))
            }
            Job::GatherBytes(v) => c.gather_bytes(&v).map(Reply::Bytes),
        };
        if answers.send(answer.map_err(|e| e.to_string())).is_err() {
            return;
        }
    }
}

/// What [`Collective::reduce_scatter_sum`] and [`Collective::all_gather`] may assume: one
/// count per rank, adding up to the whole buffer, this rank's part its count long.
fn check_parts(c: &dyn Collective, counts: &[usize], whole: usize, part: usize) -> Result<()> {
    if counts.len() != c.size()
        || counts.iter().sum::<usize>() != whole
        || counts.get(c.rank()) != Some(&part)
    {
        return Err(super::comm_error(format!(
            "{} counts adding up to {} for {} ranks: they do not match buffers of {whole} and {part}",
            counts.len(),
            counts.iter().sum::<usize>(),
            c.size()
        )));
    }
    Ok(())
}
