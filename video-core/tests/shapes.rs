#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Shapes, token grids and conditioning.

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use vidgen_video_core::{CondDrop, Conditioning, Error, TokenGrid, VideoShape};

fn video(b: usize, c: usize, t: usize, h: usize, w: usize) -> Tensor {
    let n = b * c * t * h * w;
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .reshape((b, c, t, h, w))
        .unwrap()
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(48))]
    #[test]
    fn fold_unfold_roundtrip(b in 1usize..3, c in 1usize..4, t in 1usize..5, h in 1usize..4, w in 1usize..4) {
        let x = video(b, c, t, h, w);
        let (frames, s) = VideoShape::fold(&x).unwrap();
        prop_assert_eq!(frames.dims(), &[b * t, c, h, w]);
        // frame t of video b sits at b·T + t
        let f = frames.get(t - 1).unwrap();
        let want = x.get(0).unwrap().narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap();
        prop_assert_eq!(f.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let back = VideoShape::unfold(&frames, s.t).unwrap();
        prop_assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let svd = VideoShape::to_btchw(&x).unwrap();
        prop_assert_eq!(svd.dims(), &[b, t, c, h, w]);
        let again = VideoShape::from_btchw(&svd).unwrap();
        prop_assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn token_grid_flat_roundtrip(b in 1usize..3, t in 1usize..4, h in 1usize..5, w in 1usize..5) {
        let n = b * t * h * w;
        let ids: Vec<u32> = (0..n as u32).collect();
        let flat = Tensor::from_vec(ids.clone(), (b, t * h * w), &Device::Cpu).unwrap();
        let g = TokenGrid::from_flat(&flat, t, h, w).unwrap();
        prop_assert_eq!(g.dims4(), (b, t, h, w));
        prop_assert_eq!(g.tokens_per_frame(), h * w);
        prop_assert_eq!(g.flatten().unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap(), ids);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        VideoShape::of(&x),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(VideoShape::new(1, 0, 1, 1, 1).is_err());
    let frames = Tensor::zeros((5, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let e = VideoShape::unfold(&frames, 2).unwrap_err();
    assert!(e.to_string().contains("not a multiple of T = 2"), "{e}");
    let s = VideoShape::new(1, 3, 2, 2, 2).unwrap();
    let e = s.check("latents", &video(1, 3, 2, 2, 3)).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected [1, 3, 2, 2, 2], found [1, 3, 2, 2, 3]"),
        "{e}"
    );

    let f = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(TokenGrid::new(f), Err(Error::DType { .. })));
    let flat = Tensor::zeros((1, 7), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        TokenGrid::from_flat(&flat, 2, 2, 2),
        Err(Error::ShapeMismatch { .. })
    ));
    let g = TokenGrid::from_vec(vec![0, 5, 9, 2], 1, 2, 2).unwrap();
    assert!(g.check_vocab(10).is_ok());
    assert!(g.check_vocab(9).unwrap_err().to_string().contains("id 9"));
}

#[test]
fn conditioning_without_and_cat() {
    let dev = Device::Cpu;
    let c = Conditioning::none()
        .with_context(Tensor::ones((1, 2, 3), DType::F32, &dev).unwrap())
        .with_concat(Tensor::ones((1, 4, 2, 2, 2), DType::F32, &dev).unwrap())
        .with_added(
            "added_time_ids",
            Tensor::ones((1, 3), DType::F32, &dev).unwrap(),
        );
    let u = c
        .without(CondDrop {
            context: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        u.context
            .as_ref()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    assert_eq!(
        u.concat
            .as_ref()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        32.0
    );
    let both = Conditioning::cat_batch(&[&c, &u]).unwrap();
    assert_eq!(both.context.as_ref().unwrap().dims(), &[2, 2, 3]);
    assert_eq!(both.added["added_time_ids"].dims(), &[2, 3]);
    let partial =
        Conditioning::none().with_context(Tensor::ones((1, 2, 3), DType::F32, &dev).unwrap());
    let bare = Conditioning::none();
    assert!(Conditioning::cat_batch(&[&partial, &bare]).is_err());
}
