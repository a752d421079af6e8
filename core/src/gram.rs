//! `xᵀx` of blocks of rows, in f64, for second moments: the dataset's input moments here, and
//! the layer-input Hessians of engines that gather their inputs as rows (the burn engine).

/// Adds `xᵀx` of the row-major `[rows, d]` block `x` to the upper triangle of `gram`.
///
/// Four rows at a time, so each pass over a row of `gram` does four multiply-adds per load.
/// Call [`mirror_upper`] once every block is in, for the full symmetric matrix.
///
/// # Panics
/// When `d` is 0, or `gram` holds fewer than `d · d` values.
pub fn accumulate_gram(gram: &mut [f64], x: &[f32], d: usize) {
    let mut block = vec![0f64; 4 * d];
    for rows in x.chunks(4 * d) {
        block.iter_mut().for_each(|v| *v = 0.0);
        for (b, &v) in block.iter_mut().zip(rows) {
            *b = v as f64;
        }
        let (r0, rest) = block.split_at(d);
        let (r1, rest) = rest.split_at(d);
        let (r2, r3) = rest.split_at(d);
        for i in 0..d {
            let (a0, a1, a2, a3) = (r0[i], r1[i], r2[i], r3[i]);
            if a0 == 0.0 && a1 == 0.0 && a2 == 0.0 && a3 == 0.0 {
                continue;
            }
            let row = &mut gram[i * d + i..(i + 1) * d];
            for (j, g) in row.iter_mut().enumerate() {
                let j = i + j;
                *g += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j];
            }
        }
    }
}

/// Copies the upper triangle of the `d × d` matrix `gram` onto its lower triangle.
///
/// # Panics
/// When `gram` holds fewer than `d · d` values.
pub fn mirror_upper(gram: &mut [f64], d: usize) {
    for i in 0..d {
        for j in 0..i {
            gram[i * d + j] = gram[j * d + i];
        }
    }
}
