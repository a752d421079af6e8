//! Strided matrix views and the matrix product behind linear layers and unfolded
//! (im2col) convolutions.
//!
//! The product is the `gemm` crate's (runtime-dispatched SIMD kernels), always called
//! single-threaded: the engine parallelises over members and chunks of images itself, so
//! that results never depend on the thread count. The views check their bounds once when
//! they are made, which is what makes the raw-pointer call below sound.

/// A read-only strided view of a `rows × cols` matrix: element `(i, j)` is
/// `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A mutable strided view of a `rows × cols` matrix.
#[derive(Debug)]
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// Whether every element of a `rows × cols` view with strides `rs`, `cs` lies in `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

impl<'a, T> MatRef<'a, T> {
    /// A strided view.
    ///
    /// # Panics
    /// When an element would lie outside `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, cs),
            "a {rows}x{cols} view (strides {rs}, {cs}) exceeds {} values",
            data.len()
        );
        MatRef { data, rows, cols, rs, cs }
    }

    /// The first `rows·cols` values of `data`, row by row.
    ///
    /// # Panics
    /// When `data` is shorter.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Columns `start..end`.
    ///
    /// # Panics
    /// When the range exceeds the columns.
    pub fn columns(self, start: usize, end: usize) -> Self {
        assert!(start <= end && end <= self.cols, "columns {start}..{end} of {}", self.cols);
        if start == end || self.rows == 0 {
            return MatRef { data: &self.data[..0], rows: self.rows, cols: end - start, rs: self.rs, cs: self.cs };
        }
        MatRef { data: &self.data[start * self.cs..], rows: self.rows, cols: end - start, rs: self.rs, cs: self.cs }
    }
}

impl<'a, T> MatMut<'a, T> {
    /// A strided view.
    ///
    /// # Panics
    /// When an element would lie outside `data`.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, cs),
            "a {rows}x{cols} view (strides {rs}, {cs}) exceeds {} values",
            data.len()
        );
        MatMut { data, rows, cols, rs, cs }
    }

    /// The first `rows·cols` values of `data`, row by row.
    ///
    /// # Panics
    /// When `data` is shorter.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        MatMut::new(data, rows, cols, cols, 1)
    }
}

/// `dst ← scale · a × b`, or `dst ← dst + scale · a × b` when `accumulate`.
///
/// Each element of the product is summed over `k` in the same order for the same inputs,
/// so equal calls give bit-identical results.
///
/// # Shapes
/// - `a`: `[m, k]`, `b`: `[k, n]`, `dst`: `[m, n]`
///
/// # Panics
/// When the shapes do not fit.
pub(crate) fn matmul<T: Scalar>(dst: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, accumulate: bool, scale: T) {
    matmul_on(1, dst, a, b, accumulate, scale)
}

/// [`matmul`] on up to `threads` threads (gemm's own split of the product's blocks; each
/// element is still summed by one thread in one order, so the result does not depend on
/// `threads`).
pub(crate) fn matmul_on<T: Scalar>(
    threads: usize,
    dst: MatMut<'_, T>,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    scale: T,
) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    assert!(
        a.rows == m && b.rows == k && b.cols == n,
        "matmul of {m}x{n} from {}x{} times {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = T::ZERO;
                }
            }
        }
        return;
    }
    // SAFETY: the three views were bounds-checked when made (every element they address lies
    // inside their slices), `dst` is a unique borrow so it aliases neither operand, and the
    // strides are at most the slice lengths, far below `isize::MAX`. `T` is f32 or f64,
    // which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            scale,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        );
    }
}

/// The element types [`matmul`] accepts: `f32` and `f64`.
pub(crate) trait Scalar: Copy + 'static {
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
}

impl Scalar for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
}

impl Scalar for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_on_several_threads_are_bit_identical_to_one() {
        for (m, k, n) in [(16, 72, 6272), (32, 144, 1568), (10, 64, 128), (64, 576, 3136)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 29 % 13) as f32 - 6.0) / 6.0 + 1e-3 * i as f32).collect();
            let product = |threads: usize| {
                let mut c = vec![0.5f32; m * n];
                let (a, b) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
                matmul_on(threads, MatMut::row_major(&mut c, m, n), a, b, true, 0.25);
                c
            };
            let one = product(1);
            for threads in [2, 3] {
                assert!(product(threads) == one, "{m}x{k}x{n} on {threads} threads");
            }
        }
    }

    #[test]
    fn strided_products_match_a_naive_loop() {
        let (m, k, n) = (7, 13, 11);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 29 % 13) as f32 - 6.0) / 6.0).collect();
        let want = naive(
            &a.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &b.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            m,
            k,
            n,
        );
        // Plain row-major.
        let mut c = vec![0f32; m * n];
        matmul(MatMut::row_major(&mut c, m, n), MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), false, 1.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((*x as f64 - y).abs() < 1e-5, "{x} {y}");
        }
        // Transposed operands stored the other way round, accumulated with a scale.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(
            MatMut::row_major(&mut c, m, n),
            MatRef::row_major(&at, k, m).t(),
            MatRef::row_major(&bt, n, k).t(),
            true,
            0.5,
        );
        for (x, y) in c.iter().zip(&want) {
            assert!((*x as f64 - 1.5 * y).abs() < 1e-5, "{x} {y}");
        }
        // A column window.
        let mut c2 = vec![0f32; m * 3];
        matmul(
            MatMut::row_major(&mut c2, m, 3),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n).columns(4, 7),
            false,
            1.0,
        );
        for i in 0..m {
            for j in 0..3 {
                assert!((c2[i * 3 + j] as f64 - want[i * n + 4 + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn a_view_past_the_end_panics() {
        let data = [0f32; 5];
        let _ = MatRef::row_major(&data, 2, 3);
    }
}
