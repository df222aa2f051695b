use candle_core::{Device, Tensor};
fn main() {
    let d = Device::Cpu;
    for (m, k, n) in [(512usize, 512usize, 1536usize), (512, 512, 2752), (512, 1376, 512), (512, 512, 512)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &d).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &d).unwrap();
        let r = 40;
        let time = |f: &dyn Fn()| { for _ in 0..5 { f() } let t = std::time::Instant::now(); for _ in 0..r { f() } t.elapsed().as_secs_f64() / r as f64 };
        let g = |t: f64| 2.0 * (m * k * n) as f64 / t / 1e9;
        let t1 = time(&|| { std::hint::black_box(a.matmul(&w.t().unwrap()).unwrap()); });
        let t2 = time(&|| { std::hint::black_box(video_kernels::linear(&a, &w, None).unwrap()); });
        let t3 = time(&|| video_core::in_pool(|| { std::hint::black_box(a.matmul(&w.t().unwrap()).unwrap()); }));
        let t4 = time(&|| video_core::in_pool(|| { std::hint::black_box(video_kernels::linear(&a, &w, None).unwrap()); }));
        println!("{m} {k} {n}: candle {:.0}, linear {:.0}, pooled candle {:.0}, pooled linear {:.0} GFLOP/s", g(t1), g(t2), g(t3), g(t4));
    }
}
