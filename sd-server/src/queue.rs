//! [`Queue`]: one model resident, jobs run one at a time on a worker thread of their own
//! (never on the async runtime), at most `capacity` waiting (more are refused: 503).
//!
//! A job stops at the next step when `/sdapi/v1/interrupt` is called or when its client goes
//! away: a request whose connection closes drops its [`Ticket`], which raises the job's cancel
//! flag, and the step callback then returns `ControlFlow::Break(())`. A job whose client left
//! while it waited is skipped. A panic inside the pipeline fails that job only.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use sd_pipeline::checkpoint::Multipliers;
use sd_pipeline::{GenerateRequest, Generated, StableDiffusion, StepProgress};
use tokio::sync::oneshot;

use crate::api_error::ApiError;
use crate::error::{Error, Result};
use crate::loras::LoraEntry;
use crate::models::ModelEntry;
use crate::progress::Running;

/// What a job does.
#[derive(Debug)]
pub enum Work {
    /// Generate each request in turn (A1111's `n_iter` batches); `label` is shown by progress.
    Generate {
        /// One request per batch.
        requests: Vec<GenerateRequest>,
        /// What progress calls the job (the prompt).
        label: String,
    },
    /// Replace the resident model.
    Load(ModelEntry),
}

/// What a finished job gives back.
#[derive(Debug)]
pub enum Done {
    /// The images of each batch.
    Images(Vec<Generated>),
    /// The model now resident.
    Loaded(ModelEntry),
}

/// The resident model, as handlers describe it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// Its catalog entry.
    pub entry: ModelEntry,
    /// Its default image side in pixels.
    pub sample_size: usize,
}

struct Job {
    work: Work,
    cancel: Arc<AtomicBool>,
    reply: oneshot::Sender<std::result::Result<Done, ApiError>>,
}

struct Current {
    cancel: Arc<AtomicBool>,
    progress: Running,
}

struct State {
    waiting: VecDeque<Job>,
    current: Option<Current>,
    model: LoadedModel,
    stopping: bool,
}

/// Counts of what happened to the jobs offered, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs taken into the queue.
    pub accepted: u64,
    /// Jobs refused because the queue was full.
    pub refused: u64,
    /// Jobs that finished with a result.
    pub completed: u64,
    /// Jobs interrupted, or whose client left.
    pub cancelled: u64,
    /// Jobs that failed (bad request found late, pipeline error, panic).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    counters: Counters,
}

impl Shared {
    /// The state; a poisoned lock (a panic while held, which the worker prevents) is reused.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job handed to the queue: await it with [`Ticket::wait`]. Dropping it unfinished (a
/// client that disconnected) cancels the job.
pub struct Ticket {
    reply: oneshot::Receiver<std::result::Result<Done, ApiError>>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl Ticket {
    /// The job's result.
    ///
    /// # Errors
    /// The job's [`ApiError`], or [`ApiError::ShuttingDown`] when the worker stopped first.
    pub async fn wait(mut self) -> std::result::Result<Done, ApiError> {
        let result = (&mut self.reply).await;
        self.finished = true;
        result.unwrap_or(Err(ApiError::ShuttingDown))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// The job queue and its worker thread.
pub struct Queue {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Queue {
    /// Loads `model` (with `loras` as side branches) on a new worker thread and starts taking
    /// jobs, at most `capacity` waiting.
    ///
    /// # Errors
    /// [`Error::Load`] when the model does not load.
    pub fn start(model: ModelEntry, loras: Vec<LoraEntry>, capacity: usize) -> Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let first = model.clone();
        let worker = std::thread::Builder::new()
            .name("sd-serve-worker".into())
            .spawn(move || {
                let sd = match load(&first, &loras) {
                    Ok(sd) => sd,
                    Err(error) => {
                        let _ = ready_tx.send(Err(Error::Load {
                            name: first.title.clone(),
                            error,
                        }));
                        return;
                    }
                };
                let shared = Arc::new(Shared {
                    state: Mutex::new(State {
                        waiting: VecDeque::new(),
                        current: None,
                        model: LoadedModel {
                            entry: first,
                            sample_size: sd.sample_size(),
                        },
                        stopping: false,
                    }),
                    wake: Condvar::new(),
                    capacity,
                    counters: Counters::default(),
                });
                let _ = ready_tx.send(Ok(shared.clone()));
                work(&shared, sd, &loras);
            })
            .map_err(Error::Serve)?;
        let shared = ready_rx.recv().map_err(|_| {
            Error::Serve(std::io::Error::other(
                "the worker thread stopped while loading",
            ))
        })??;
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Queues `work`.
    ///
    /// # Errors
    /// [`ApiError::QueueFull`] when `capacity` jobs are waiting already,
    /// [`ApiError::ShuttingDown`] once [`stop`](Self::stop) was called.
    pub fn submit(&self, work: Work) -> std::result::Result<Ticket, ApiError> {
        let mut state = self.shared.lock();
        if state.stopping {
            return Err(ApiError::ShuttingDown);
        }
        // `capacity` jobs may wait behind a running one; an idle worker takes one at once
        // even at capacity 0.
        let busy = usize::from(state.current.is_some());
        if state.waiting.len() + busy > self.shared.capacity {
            self.shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            return Err(ApiError::QueueFull {
                capacity: self.shared.capacity,
            });
        }
        let (reply, receiver) = oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        state.waiting.push_back(Job {
            work,
            cancel: cancel.clone(),
            reply,
        });
        self.shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
        drop(state);
        self.shared.wake.notify_all();
        Ok(Ticket {
            reply: receiver,
            cancel,
            finished: false,
        })
    }

    /// Stops the running job at its next step; false when none runs.
    pub fn interrupt(&self) -> bool {
        let state = self.shared.lock();
        match &state.current {
            Some(current) => {
                current.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The running job's progress (cloned), whether it was interrupted, and the number of jobs
    /// running and waiting.
    pub fn progress(&self) -> (Option<Running>, bool, usize) {
        let state = self.shared.lock();
        let running = state.current.as_ref().map(|c| c.progress.clone());
        let interrupted = state
            .current
            .as_ref()
            .is_some_and(|c| c.cancel.load(Ordering::SeqCst));
        let count = state.waiting.len() + usize::from(state.current.is_some());
        (running, interrupted, count)
    }

    /// The resident model.
    pub fn model(&self) -> LoadedModel {
        self.shared.lock().model.clone()
    }

    /// The counts so far.
    pub fn stats(&self) -> QueueStats {
        let c = &self.shared.counters;
        QueueStats {
            accepted: c.accepted.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            completed: c.completed.load(Ordering::SeqCst),
            cancelled: c.cancelled.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
        }
    }

    /// Refuses new jobs, stops the running one, fails the waiting ones and waits for the worker
    /// thread to end.
    pub fn stop(&self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            if let Some(current) = &state.current {
                current.cancel.store(true, Ordering::SeqCst);
            }
            for job in state.waiting.drain(..) {
                let _ = job.reply.send(Err(ApiError::ShuttingDown));
            }
        }
        self.shared.wake.notify_all();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the pipeline for `entry`, with every LoRA of `loras` as a side branch.
fn load(entry: &ModelEntry, loras: &[LoraEntry]) -> sd_pipeline::Result<StableDiffusion> {
    let mut builder = StableDiffusion::builder(entry.filename.as_path());
    for lora in loras {
        builder = builder.lora(&lora.path, Multipliers::both(1.0));
    }
    builder.lora_side_branches(!loras.is_empty()).build()
}

/// The worker thread's loop: take a job, run it, answer, until stopped.
fn work(shared: &Shared, mut sd: StableDiffusion, loras: &[LoraEntry]) {
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return;
                }
                if let Some(job) = state.waiting.pop_front() {
                    let label = match &job.work {
                        Work::Generate { label, .. } => label.clone(),
                        Work::Load(entry) => format!("loading {}", entry.title),
                    };
                    let iterations = match &job.work {
                        Work::Generate { requests, .. } => requests.len(),
                        Work::Load(_) => 1,
                    };
                    state.current = Some(Current {
                        cancel: job.cancel.clone(),
                        progress: Running::new(label, iterations),
                    });
                    break job;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = match job.work {
            Work::Generate { requests, .. } => {
                if job.cancel.load(Ordering::SeqCst) || job.reply.is_closed() {
                    Err(ApiError::Interrupted { step: 0 })
                } else {
                    generate(shared, &sd, &requests, &job.cancel, &job.reply)
                }
            }
            Work::Load(entry) => match catch_unwind(AssertUnwindSafe(|| load(&entry, loras))) {
                Ok(Ok(loaded)) => {
                    sd = loaded;
                    shared.lock().model = LoadedModel {
                        entry: entry.clone(),
                        sample_size: sd.sample_size(),
                    };
                    Ok(Done::Loaded(entry))
                }
                Ok(Err(e)) => Err(ApiError::Internal(format!(
                    "sd_model_checkpoint: {} does not load: {e}; {} stays loaded",
                    entry.title,
                    sd.name()
                ))),
                Err(panic) => Err(ApiError::Internal(format!(
                    "sd_model_checkpoint: loading {} panicked: {}",
                    entry.title,
                    panic_message(&panic)
                ))),
            },
        };
        let counter = match &result {
            Ok(_) => &shared.counters.completed,
            Err(ApiError::Interrupted { .. }) => &shared.counters.cancelled,
            Err(_) => &shared.counters.failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        shared.lock().current = None;
        let _ = job.reply.send(result);
    }
}

/// Runs each batch of a generation job, recording progress, stopping when cancelled.
fn generate(
    shared: &Shared,
    sd: &StableDiffusion,
    requests: &[GenerateRequest],
    cancel: &AtomicBool,
    reply: &oneshot::Sender<std::result::Result<Done, ApiError>>,
) -> std::result::Result<Done, ApiError> {
    let mut batches = Vec::with_capacity(requests.len());
    for (iteration, request) in requests.iter().enumerate() {
        let mut on_step = |p: &StepProgress| {
            if let Some(current) = shared.lock().current.as_mut() {
                let progress = &mut current.progress;
                progress.iteration = iteration;
                progress.step = p.step;
                progress.total = p.total;
                progress.preview = Some(p.predicted_original.clone());
            }
            if cancel.load(Ordering::SeqCst) || reply.is_closed() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match catch_unwind(AssertUnwindSafe(|| sd.generate(request, &mut on_step))) {
            Ok(Ok(generated)) => batches.push(generated),
            Ok(Err(e)) => return Err(ApiError::from_pipeline(e)),
            Err(panic) => {
                return Err(ApiError::Internal(format!(
                    "the pipeline panicked: {}",
                    panic_message(&panic)
                )))
            }
        }
    }
    Ok(Done::Images(batches))
}

/// The message of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
