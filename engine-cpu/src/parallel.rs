//! Fan-out of independent work items over a fixed number of threads.
//!
//! Every caller splits its work into items whose boundaries depend only on the problem
//! (batch size, member count), never on the thread count, and each item writes only its own
//! output slot; reductions over items then run in item order. That is what makes every
//! result bit-identical whether one thread or many ran it.
//!
//! [`for_each`] spawns its threads per call (a training step's work items, the members'
//! chunks of images: one call a step). [`per_channel`], [`in_parts`] (element-wise passes)
//! and the direct convolutions' splits of one operation, which a lone `resnet20` member's step makes some hundred times, run on
//! rayon's global pool instead (one thread per core, started once; the `gemm` crate's
//! products use it too): a fresh thread per operation cost about 7 % of that step's time,
//! while handing the once-a-step items of small networks to the pool made them slower
//! (both measured in `docs/research/cpu-engine-log.md`). More parts than the pool has threads
//! simply queue.

use std::sync::Mutex;

/// Runs `work(i, &mut outputs[i], scratch)` for every item `i`, on as many threads as there
/// are `scratch` values (each thread owns one, e.g. its buffers), capped at the item count.
/// Threads claim items in order from a shared cursor.
///
/// # Panics
/// When `scratch` is empty, or when `work` panics (the panic is propagated).
pub(crate) fn for_each<O: Send, S: Send>(
    outputs: &mut [O],
    scratch: &mut [S],
    work: impl Fn(usize, &mut O, &mut S) + Sync,
) {
    assert!(!scratch.is_empty(), "at least one thread's scratch is needed");
    let threads = scratch.len().min(outputs.len());
    if threads <= 1 {
        let s = &mut scratch[0];
        for (i, o) in outputs.iter_mut().enumerate() {
            work(i, o, s);
        }
        return;
    }
    let queue = Mutex::new(outputs.iter_mut().enumerate());
    let (first, rest) = scratch.split_first_mut().expect("checked non-empty");
    std::thread::scope(|scope| {
        for s in rest.iter_mut().take(threads - 1) {
            let (queue, work) = (&queue, &work);
            scope.spawn(move || drain(queue, s, work));
        }
        drain(&queue, first, &work);
    });
}

/// Takes items from `queue` until it is empty.
fn drain<'a, O: 'a, S>(
    queue: &Mutex<impl Iterator<Item = (usize, &'a mut O)>>,
    scratch: &mut S,
    work: &impl Fn(usize, &mut O, &mut S),
) {
    loop {
        // A panic in another worker poisons nothing we rely on: the iterator stays valid.
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        match next {
            Some((i, out)) => work(i, out, scratch),
            None => return,
        }
    }
}

/// `work(c, out_c)` for every channel `c < channels`, `out_c` being channel `c`'s `len`
/// values of `out` (empty when `len` is 0), on up to `threads` threads that take consecutive
/// runs of channels; the results in channel order. Each channel's work runs on one thread
/// as it would alone, so the results do not depend on `threads`.
pub(crate) fn per_channel<R: Send>(
    threads: usize,
    channels: usize,
    out: &mut [f32],
    len: usize,
    work: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let run = |range: std::ops::Range<usize>, out: &mut [f32]| -> Vec<R> {
        range.clone().map(|c| work(c, &mut out[(c - range.start) * len..][..len])).collect()
    };
    let parts = threads.clamp(1, channels.max(1));
    let out = &mut out[..channels * len];
    if parts == 1 {
        return run(0..channels, out);
    }
    let mut results: Vec<Vec<R>> = (0..parts).map(|_| Vec::new()).collect();
    rayon::scope(|scope| {
        let (mine, theirs) = results.split_first_mut().expect("parts ≥ 1");
        let first = share(channels, parts, 0);
        let (out_mine, mut rest) = out.split_at_mut(first.len() * len);
        for (part, slot) in (1..parts).zip(theirs) {
            let range = share(channels, parts, part);
            let (out_theirs, next) = std::mem::take(&mut rest).split_at_mut(range.len() * len);
            rest = next;
            let run = &run;
            scope.spawn(move |_| *slot = run(range, out_theirs));
        }
        *mine = run(first, out_mine);
    });
    results.into_iter().flatten().collect()
}

/// `work(start, part)` for up to `threads` consecutive parts of `out` (`part` being
/// `out[start..start + part.len()]`), on the pool; for element-wise work, whose values do not
/// depend on where the parts begin. Below 8,192 values, one part.
pub(crate) fn in_parts(threads: usize, out: &mut [f32], work: impl Fn(usize, &mut [f32]) + Sync) {
    let len = out.len();
    let parts = threads.clamp(1, len.div_ceil(8192).max(1));
    if parts == 1 {
        return work(0, out);
    }
    rayon::scope(|scope| {
        let (work, mut rest) = (&work, out);
        for part in 0..parts {
            let range = share(len, parts, part);
            let (mine, next) = std::mem::take(&mut rest).split_at_mut(range.len());
            rest = next;
            if part + 1 == parts {
                work(range.start, mine);
            } else {
                scope.spawn(move |_| work(range.start, mine));
            }
        }
    });
}

/// Part `part` of `0..n` split into `parts` nearly equal consecutive ranges.
pub(crate) fn share(n: usize, parts: usize, part: usize) -> std::ops::Range<usize> {
    n * part / parts..n * (part + 1) / parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_whatever_the_thread_count() {
        for threads in [1, 2, 3, 8] {
            let mut out = vec![0usize; 37];
            let mut scratch = vec![0usize; threads];
            for_each(&mut out, &mut scratch, |i, o, s| {
                *o += i * i;
                *s += 1;
            });
            assert_eq!(out, (0..37).map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(scratch.iter().sum::<usize>(), 37);
        }
    }

    #[test]
    fn in_parts_covers_every_value_once_with_its_offset() {
        for (threads, len) in [(1, 20_000), (2, 20_000), (3, 20_001), (8, 9_000), (4, 100)] {
            let mut out = vec![0f32; len];
            in_parts(threads, &mut out, |start, part| {
                part.iter_mut().enumerate().for_each(|(i, v)| *v += (start + i) as f32);
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32), "{threads} threads, {len} values");
        }
    }

    #[test]
    fn per_channel_gives_each_channel_its_slice_and_keeps_channel_order() {
        for threads in [1, 2, 3, 8] {
            let mut out = vec![0f32; 5 * 3];
            let got = per_channel(threads, 5, &mut out, 3, |c, o| {
                o.iter_mut().for_each(|v| *v = c as f32);
                c * 10
            });
            assert_eq!(got, vec![0, 10, 20, 30, 40], "{threads} threads");
            assert_eq!(out, (0..15).map(|i| (i / 3) as f32).collect::<Vec<_>>());
            // No output: every channel still runs, with an empty slice.
            assert_eq!(per_channel(threads, 4, &mut [], 0, |c, o| (c, o.len())), vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
        }
    }
}
