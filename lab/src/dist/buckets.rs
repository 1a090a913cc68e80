//! Gradient buckets and the communication thread. Parameters go into flat f32 buckets in
//! reverse order (the last layers' gradients are ready first): a small first bucket, then
//! buckets of up to `bytes`. During the backward of a step's last micro-batch the
//! gradient-ready event copies each gradient into its bucket; a full bucket is handed to the
//! communication thread, in bucket order on every rank (so the ranks' all-reduces match),
//! while the backward goes on. `finish` sends what the backward did not reach, waits, and
//! writes the sums back as the gradients.

use super::comm::{Answer, Job, Pool, Reply, serve};
use super::shards::{Piece, Shards};
use super::{Collective, comm_error};
use rewind::error::{Error, Result};
use rewind::{GradReady, Tensor};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bucket capacities (PyTorch DDP's defaults: 1 MiB first, 25 MiB after) and the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSizes {
    /// Bytes of the first bucket (the parameters whose gradients are ready first).
    pub first_bytes: usize,
    /// Bytes of every later bucket.
    pub bytes: usize,
    /// How long to wait for a collective before declaring the job stuck (a rank stopped or
    /// cut off: one that died is reported by the launcher).
    pub timeout: Duration,
}

impl Default for BucketSizes {
    fn default() -> Self {
        BucketSizes {
            first_bytes: 1 << 20,
            bytes: 25 << 20,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Where a rank's time in gradient communication went, over the steps so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommTimes {
    /// Seconds the communication thread spent in gradient all-reduces.
    pub all_reduce_s: f64,
    /// Seconds the training thread waited for them after its backward (the part the backward
    /// did not hide).
    pub waited_s: f64,
    /// Bytes all-reduced.
    pub bytes: usize,
    /// ZeRO-1: seconds the training thread spent bringing every rank's updated shard into
    /// its parameters (the all-gather and the copies).
    pub all_gather_s: f64,
}

/// Where each parameter's gradient sits: its bucket, offset and length.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) slots: Vec<(usize, usize, usize)>,
    pub(super) lens: Vec<usize>,
}

impl Layout {
    pub(super) fn new(params: &[Tensor], sizes: BucketSizes) -> Layout {
        let mut slots = vec![(0, 0, 0); params.len()];
        let mut lens: Vec<usize> = Vec::new();
        let cap = |b: usize| {
            if b == 0 {
                sizes.first_bytes
            } else {
                sizes.bytes
            }
        };
        for (i, p) in params.iter().enumerate().rev() {
            let (n, b) = (p.numel(), lens.len());
            match lens.last_mut() {
                Some(len) if (*len + n).saturating_mul(4) <= cap(b - 1) || *len == 0 => {
                    slots[i] = (b - 1, *len, n);
                    *len += n;
                }
                _ => {
                    slots[i] = (b, 0, n);
                    lens.push(n);
                }
            }
        }
        Layout { slots, lens }
    }
}

/// One step's buckets being filled.
struct Step {
    params: Vec<Tensor>,
    /// The gradients of the step's earlier micro-batches, added to this backward's (each
    /// dropped once it is in its bucket).
    earlier: Vec<Option<Tensor>>,
    /// Whether a parameter had any gradient (this backward's or an earlier one's).
    had_grad: Vec<bool>,
    layout: Layout,
    buffers: Vec<Vec<f32>>,
    /// Parameters not yet ready, per bucket.
    missing: Vec<usize>,
    ready: Vec<bool>,
    /// Buckets handed to the communication thread (always a prefix, in order).
    sent: usize,
    jobs: Sender<Job>,
    /// Under ZeRO-1: the shards each bucket is reduce-scattered to, and this rank.
    shards: Option<Rc<Shards>>,
    rank: usize,
    pool: Pool,
    error: Option<Error>,
}

impl Step {
    fn put(&mut self, i: usize) {
        let (b, off, len) = self.layout.slots[i];
        let dst = &mut self.buffers[b][off..off + len];
        let (earlier, grad) = (self.earlier[i].take(), self.params[i].grad());
        self.had_grad[i] = earlier.is_some() || grad.is_some();
        // The bucket holds it now: finish sets the sum (or this rank's shard of it).
        self.params[i].set_grad(None);
        match (earlier, grad) {
            (Some(e), Some(g)) => {
                for ((d, e), g) in dst.iter_mut().zip(e.to_vec_f32()).zip(g.to_vec_f32()) {
                    *d = e + g; // as `earlier.add(&g)` rounds it
                }
            }
            (Some(g), None) | (None, Some(g)) => dst.copy_from_slice(&g.to_vec_f32()),
            (None, None) => dst.fill(0.0),
        }
        self.ready[i] = true;
        self.missing[b] -= 1;
    }

    fn send_full(&mut self) -> Result<()> {
        while self.sent < self.buffers.len() && self.missing[self.sent] == 0 {
            let buf = std::mem::take(&mut self.buffers[self.sent]);
            let job = match &self.shards {
                Some(sh) => {
                    let counts = sh.counts(self.sent);
                    let mine = self.pool.take(counts[self.rank]);
                    Job::ReduceScatter(buf, counts, mine)
                }
                None => Job::Sum(buf),
            };
            self.jobs
                .send(job)
                .map_err(|_| comm_error("the communication thread has stopped"))?;
            self.sent += 1;
        }
        Ok(())
    }

    fn on_ready(&mut self, leaf: &Tensor) {
        if self.error.is_some() {
            return;
        }
        let Some(i) = self.params.iter().position(|p| p.same_handle(leaf)) else {
            return; // a leaf the optimizer does not train (an input that requires grad)
        };
        self.put(i);
        if let Err(e) = self.send_full() {
            self.error = Some(e);
        }
    }
}

/// This rank's end of data parallelism: the communication thread and the step's buckets.
pub struct Reducer {
    rank: usize,
    size: usize,
    pub(super) sizes: BucketSizes,
    jobs: Option<Sender<Job>>,
    answers: Receiver<Answer>,
    thread: Option<JoinHandle<()>>,
    step: Option<Rc<RefCell<Step>>>,
    pub(super) times: CommTimes,
    /// ZeRO-1: this rank's shard of the optimizer.
    pub(super) zero: Option<Zero>,
    pub(super) pool: Pool,
}

/// This rank's shard under ZeRO-1: its pieces and the tensors the optimizer trains for them.
pub(super) struct Zero {
    pub(super) shards: Rc<Shards>,
    pub(super) pieces: Vec<Piece>,
    pub(super) tensors: Vec<Tensor>,
}

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Reducer {
    /// Starts the communication thread, which makes its transport with `make`.
    pub fn start(
        sizes: BucketSizes,
        make: Box<dyn FnOnce() -> Result<Box<dyn Collective>> + Send>,
    ) -> Result<Reducer> {
        let (jobs, job_rx) = channel();
        let (answer_tx, answers) = channel();
        let (started_tx, started) = channel();
        let thread = std::thread::Builder::new()
            .name("rewind-comm".into())
            .spawn(move || serve(make, job_rx, answer_tx, started_tx))
            .map_err(|e| comm_error(format!("cannot start the communication thread: {e}")))?;
        let (rank, size) = started
            .recv()
            .map_err(|_| comm_error("the communication thread ended before starting"))??;
        Ok(Reducer {
            rank,
            size,
            sizes,
            jobs: Some(jobs),
            answers,
            thread: Some(thread),
            step: None,
            times: CommTimes::default(),
            zero: None,
            pool: Pool::default(),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    pub(super) fn ask(&self, job: Job) -> Result<Reply> {
        self.send(job)?;
        self.answer()
    }

    /// Queues a job without waiting for its answer (answers come in the order jobs went).
    pub(super) fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| comm_error("the reducer is closed"))?
            .send(job)
            .map_err(|_| comm_error("the communication thread has stopped"))
    }

    pub(super) fn answer(&self) -> Result<Reply> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.answers.recv_timeout(self.sizes.timeout) {
            Ok(a) => a.map_err(comm_error),
            Err(RecvTimeoutError::Timeout) => Err(comm_error(format!(
                "rank {} of {}: no collective finished within {} s (--dist-timeout): another rank has stopped or cannot be reached",
                self.rank,
                self.size,
                self.sizes.timeout.as_secs_f64()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(comm_error("the communication thread has stopped"))
            }
        }
    }

    /// Every rank's `params` set to rank 0's (f32).
    pub fn broadcast(&self, params: &[Tensor]) -> Result<()> {
        let flat: Vec<f32> = params.iter().flat_map(|p| p.to_vec_f32()).collect();
        let Reply::Floats(v, ..) = self.ask(Job::Broadcast(flat))? else {
            return Err(comm_error("a broadcast answered with statistics"));
        };
        let mut at = 0;
        for p in params {
            let n = p.numel();
            let src = &v[at..at + n];
            p.update_data::<f32>(|d| d.copy_from_slice(src))?;
            at += n;
        }
        Ok(())
    }

    /// `v` summed over the ranks.
    pub fn sum_stats(&self, v: Vec<f64>) -> Result<Vec<f64>> {
        match self.ask(Job::Stats(v))? {
            Reply::Stats(v) => Ok(v),
            _ => Err(comm_error("statistics answered with something else")),
        }
    }

    /// The gradient-ready callback for the backward of this step's last micro-batch, which
    /// fills the buckets of `params` (f32, the optimizer's) with each gradient plus its entry
    /// in `earlier` (the step's earlier micro-batches, set aside; empty: none) and sends each
    /// bucket as it fills.
    pub fn hook(&mut self, params: &[Tensor], earlier: Vec<Option<Tensor>>) -> Result<GradReady> {
        if let Some(p) = params.iter().find(|p| p.dtype() != rewind::DType::F32) {
            return Err(Error::invalid(
                "dist",
                format!("gradients are reduced in f32; a {:?} parameter", p.dtype()),
            ));
        }
        let layout = Layout::new(params, self.sizes);
        let mut missing = vec![0; layout.lens.len()];
        layout.slots.iter().for_each(|&(b, _, _)| missing[b] += 1);
        let earlier = if earlier.is_empty() {
            vec![None; params.len()]
        } else {
            earlier
        };
        let step = Rc::new(RefCell::new(Step {
            params: params.to_vec(),
            earlier,
            buffers: layout.lens.iter().map(|&n| self.pool.take(n)).collect(),
            layout,
            missing,
            ready: vec![false; params.len()],
            had_grad: vec![false; params.len()],
            sent: 0,
            jobs: self
                .jobs
                .clone()
                .ok_or_else(|| comm_error("the reducer is closed"))?,
            shards: self.zero.as_ref().map(|z| z.shards.clone()),
            rank: self.rank,
            pool: self.pool.clone(),
            error: None,
        }));
        self.step = Some(step.clone());
        Ok(GradReady::new(move |leaf| step.borrow_mut().on_ready(leaf)))
    }

    /// After the backward: sends the buckets it did not fill (gradients it did not reach are
    /// taken as they are, or zeros), waits for every sum, and sets them as the gradients —
    /// under ZeRO-1 this rank's shard of them, on its pieces. A parameter gets a gradient when
    /// any rank had one for it (decided together, so the ranks step alike).
    pub fn finish(&mut self) -> Result<()> {
        let Some(step) = self.step.take() else {
            return Ok(());
        };
        let mut s = step.borrow_mut();
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        for i in 0..s.params.len() {
            if !s.ready[i] {
                s.put(i);
            }
        }
        s.send_full()?;
        let had: Vec<f64> = s.had_grad.iter().map(|&h| f64::from(u8::from(h))).collect();
        self.send(Job::Stats(had))?;
        let waiting = std::time::Instant::now();
        let mut sums = Vec::with_capacity(s.layout.lens.len());
        for _ in 0..s.layout.lens.len() {
            let Reply::Floats(v, secs, spent) = self.answer()? else {
                return Err(comm_error("a bucket answered with something else"));
            };
            self.times.all_reduce_s += secs;
            sums.push(v);
            spent.into_iter().for_each(|v| self.pool.give(v));
        }
        let Reply::Stats(had) = self.answer()? else {
            return Err(comm_error(
                "the gradient flags answered with something else",
            ));
        };
        self.times.waited_s += waiting.elapsed().as_secs_f64();
        self.times.bytes += 4 * s.layout.lens.iter().sum::<usize>();
        let had = |i: usize| had.get(i).is_some_and(|&h| h > 0.0);
        if let Some(z) = &self.zero {
            for (p, t) in z.pieces.iter().zip(&z.tensors) {
                let b = s.layout.slots[p.param].0;
                let at = z.shards.start(p) - z.shards.owned(self.rank, b).0;
                let g = sums[b].get(at..at + p.len).ok_or_else(|| {
                    comm_error("a reduce-scatter returned fewer values than the shard owns")
                })?;
                t.set_grad(
                    had(p.param)
                        .then(|| Tensor::from_vec(g.to_vec(), &[p.len]))
                        .transpose()?,
                );
            }
        } else {
            for (i, p) in s.params.iter().enumerate() {
                let (b, off, len) = s.layout.slots[i];
                p.set_grad(
                    had(i)
                        .then(|| Tensor::from_vec(sums[b][off..off + len].to_vec(), p.shape()))
                        .transpose()?,
                );
            }
        }
        sums.into_iter().for_each(|v| self.pool.give(v));
        Ok(())
    }

    /// Time in gradient communication so far.
    pub fn times(&self) -> CommTimes {
        self.times
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        self.step = None;
        self.jobs = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rank: sums are the values themselves.
    struct Alone;
    impl Collective for Alone {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            1
        }
        fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
            Ok(())
        }
        fn all_reduce_sum_f64(&mut self, _: &mut [f64]) -> Result<()> {
            Ok(())
        }
        fn broadcast(&mut self, _: &mut [f32]) -> Result<()> {
            Ok(())
        }
        fn reduce_scatter_sum(&mut self, buf: &[f32], _: &[usize], out: &mut [f32]) -> Result<()> {
            out.copy_from_slice(buf);
            Ok(())
        }
        fn all_gather(&mut self, mine: &[f32], _: &[usize], out: &mut [f32]) -> Result<()> {
            out.copy_from_slice(mine);
            Ok(())
        }
        fn gather_bytes(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(vec![mine.to_vec()])
        }
    }

    fn param(n: usize) -> Tensor {
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), &[n])
            .unwrap()
            .requires_grad_(true)
            .unwrap()
    }

    #[test]
    fn buckets_run_in_reverse_parameter_order_a_small_one_first() {
        // 4-byte floats: a first bucket of 8 bytes holds 2, later ones of 16 bytes hold 4; a
        // parameter larger than a bucket gets one of its own.
        let params: Vec<Tensor> = [3, 1, 6, 2, 2].iter().map(|&n| param(n)).collect();
        let l = Layout::new(
            &params,
            BucketSizes {
                first_bytes: 8,
                bytes: 16,
                ..BucketSizes::default()
            },
        );
        // Reverse order: the first bucket holds the last parameter alone (2 + 2 > 2 floats);
        // 2 + 6 > 4 and 6 + 1 > 4 start new buckets; 1 + 3 = 4 share one.
        assert_eq!(l.lens, [2, 2, 6, 4]);
        assert_eq!(
            l.slots,
            [(3, 1, 3), (3, 0, 1), (2, 0, 6), (1, 0, 2), (0, 0, 2)]
        );
    }

    #[test]
    fn one_rank_keeps_every_gradient_and_fills_what_the_backward_did_not_reach() {
        let (a, b, unused) = (param(3), param(2), param(2));
        let loss = a
            .mul(&a)
            .unwrap()
            .sum()
            .unwrap()
            .add(&b.sum().unwrap())
            .unwrap();
        let mut r = Reducer::start(
            BucketSizes {
                first_bytes: 4,
                bytes: 8,
                ..BucketSizes::default()
            },
            Box::new(|| Ok(Box::new(Alone) as Box<dyn Collective>)),
        )
        .unwrap();
        let params = [a.clone(), b.clone(), unused.clone()];
        let hook = r.hook(&params, Vec::new()).unwrap();
        loss.backward_with(
            None,
            rewind::BackwardOptions {
                on_grad_ready: Some(hook),
                ..Default::default()
            },
        )
        .unwrap();
        r.finish().unwrap();
        assert_eq!(a.grad().unwrap().to_vec_f32(), [0.0, 2.0, 4.0]);
        assert_eq!(b.grad().unwrap().to_vec_f32(), [1.0, 1.0]);
        assert!(
            unused.grad().is_none(),
            "no gradient appears where none was"
        );
        assert_eq!(r.sum_stats(vec![1.5, 2.0]).unwrap(), [1.5, 2.0]);
    }
}
