//! Video-LaVIT's sequence format: one vocabulary for text, keyframe (image) codes and motion
//! codes, and the clip layout `[IMG] keyframe codes [/IMG] [MOV] motion codes [/MOV]`.
//!
//! # Vocabulary ([`VocabLayout`])
//! ```text
//! [0, text)                         text slots
//! text, text + 1                    [IMG], [/IMG]
//! [text + 2, text + 2 + image)      keyframe codes
//! next two                          [MOV], [/MOV]
//! then motion codes                 motion codes
//! ```
//! [`VocabLayout::lavit`] is Video-LaVIT's released layout (32 000 LLaMA text ids, 16 384 visual
//! codes, 1 024 motion codes: 49 412 ids, `[IMG]` = 32 000, `[MOV]` = 48 386).
//!
//! # Text slots ([`TextTable`])
//! Text comes from a real tokenizer (CLIP's here). With [`TextTable::Identity`] every tokenizer
//! id is its own slot (the full-size layout: `text` = the tokenizer's vocabulary). A miniature
//! keeps its embedding table small with [`TextTable::Compact`]: slot 0 is `[UNK]` and slot
//! `1 + i` is the `i`-th tokenizer id the model was trained with; other ids map to `[UNK]`.
//!
//! # Sequences and training samples
//! [`LavitSequence`] is text followed by clips; [`LavitSequence::to_ids`] and
//! [`LavitSequence::from_ids`] map it in and out of the vocabulary. [`TrainingSample`] builds
//! the three kinds of training sequences (text → keyframe → motion, keyframe → motion, motion
//! continuation) and the unconditional ones guidance needs, each with the mask of the tokens
//! the next-token loss is taken on.

use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

/// Sizes of the three id ranges of the vocabulary (the four tags are placed between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabLayout {
    /// Text slots.
    pub text: usize,
    /// Keyframe (image tokenizer) codes.
    pub image: usize,
    /// Motion tokenizer codes.
    pub motion: usize,
}

/// One id of the vocabulary, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// A text slot.
    Text(u32),
    /// `[IMG]`: a keyframe's codes follow.
    ImgStart,
    /// `[/IMG]`.
    ImgEnd,
    /// A keyframe code.
    Image(u32),
    /// `[MOV]`: a clip's motion codes follow.
    MovStart,
    /// `[/MOV]`.
    MovEnd,
    /// A motion code.
    Motion(u32),
}

impl VocabLayout {
    /// Video-LaVIT's layout: 32 000 text, 16 384 visual, 1 024 motion (49 412 ids).
    pub const fn lavit() -> Self {
        Self {
            text: 32_000,
            image: 16_384,
            motion: 1_024,
        }
    }

    /// Checks the sizes (each ≥ 1, total below 2³²).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (n, v) in [
            ("text", self.text),
            ("image", self.image),
            ("motion", self.motion),
        ] {
            if v == 0 {
                return Err(Error::config(n, "must be ≥ 1"));
            }
        }
        let total = self.text as u128 + self.image as u128 + self.motion as u128 + 4;
        if total > u32::MAX as u128 {
            return Err(Error::config("layout", "more than 2^32 ids"));
        }
        Ok(())
    }

    /// Total vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.text + self.image + self.motion + 4
    }

    /// `[IMG]`.
    pub fn img_start(&self) -> u32 {
        self.text as u32
    }

    /// `[/IMG]`.
    pub fn img_end(&self) -> u32 {
        self.text as u32 + 1
    }

    /// First keyframe code id.
    pub fn image_base(&self) -> u32 {
        self.text as u32 + 2
    }

    /// `[MOV]`.
    pub fn mov_start(&self) -> u32 {
        self.image_base() + self.image as u32
    }

    /// `[/MOV]`.
    pub fn mov_end(&self) -> u32 {
        self.mov_start() + 1
    }

    /// First motion code id.
    pub fn motion_base(&self) -> u32 {
        self.mov_start() + 2
    }

    /// The ids of keyframe codes.
    pub fn image_range(&self) -> std::ops::Range<u32> {
        self.image_base()..self.mov_start()
    }

    /// The ids of motion codes.
    pub fn motion_range(&self) -> std::ops::Range<u32> {
        self.motion_base()..self.motion_base() + self.motion as u32
    }

    /// What `id` is.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an id outside the vocabulary.
    pub fn classify(&self, id: u32) -> Result<Token> {
        let t = self.text as u32;
        Ok(if id < t {
            Token::Text(id)
        } else if id == self.img_start() {
            Token::ImgStart
        } else if id == self.img_end() {
            Token::ImgEnd
        } else if id < self.mov_start() {
            Token::Image(id - self.image_base())
        } else if id == self.mov_start() {
            Token::MovStart
        } else if id == self.mov_end() {
            Token::MovEnd
        } else if (id as usize) < self.vocab_size() {
            Token::Motion(id - self.motion_base())
        } else {
            return Err(Error::invalid(
                "token id",
                format!("{id} is outside the vocabulary of {}", self.vocab_size()),
            ));
        })
    }

    /// The id of `token`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a slot or code beyond its range.
    pub fn id(&self, token: Token) -> Result<u32> {
        let check = |what: &str, v: u32, n: usize| {
            if (v as usize) < n {
                Ok(v)
            } else {
                Err(Error::invalid(
                    what,
                    format!("{v} is out of range for {n} entries"),
                ))
            }
        };
        Ok(match token {
            Token::Text(s) => check("text slot", s, self.text)?,
            Token::ImgStart => self.img_start(),
            Token::ImgEnd => self.img_end(),
            Token::Image(c) => self.image_base() + check("keyframe code", c, self.image)?,
            Token::MovStart => self.mov_start(),
            Token::MovEnd => self.mov_end(),
            Token::Motion(c) => self.motion_base() + check("motion code", c, self.motion)?,
        })
    }
}

/// How tokenizer ids become text slots (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TextTable {
    /// Slot = tokenizer id; `size` slots.
    Identity {
        /// The tokenizer's vocabulary size.
        size: usize,
    },
    /// Slot 0 = `[UNK]`, slot `1 + i` = `ids[i]` (distinct tokenizer ids).
    Compact {
        /// The tokenizer ids with a slot, in slot order.
        ids: Vec<u32>,
    },
}

impl TextTable {
    /// A compact table over the distinct ids of `ids`, ascending.
    pub fn compact_from(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        TextTable::Compact { ids: v }
    }

    /// Number of text slots.
    pub fn slots(&self) -> usize {
        match self {
            TextTable::Identity { size } => *size,
            TextTable::Compact { ids } => ids.len() + 1,
        }
    }

    /// The slot of a tokenizer id (`[UNK]` = 0 for an id a compact table lacks).
    ///
    /// # Errors
    /// An id beyond an identity table's size.
    pub fn slot(&self, id: u32) -> Result<u32> {
        match self {
            TextTable::Identity { size } => {
                if (id as usize) < *size {
                    Ok(id)
                } else {
                    Err(Error::invalid(
                        "text token id",
                        format!("{id} is outside the tokenizer's {size} ids"),
                    ))
                }
            }
            TextTable::Compact { ids } => Ok(ids.binary_search(&id).map_or(0, |i| i as u32 + 1)),
        }
    }

    /// The tokenizer id of a slot (`None` for `[UNK]` or a slot beyond the table).
    pub fn token(&self, slot: u32) -> Option<u32> {
        match self {
            TextTable::Identity { size } => ((slot as usize) < *size).then_some(slot),
            TextTable::Compact { ids } => slot
                .checked_sub(1)
                .and_then(|i| ids.get(i as usize).copied()),
        }
    }

    /// Whether a compact table knows every id (an identity table knows those in range).
    pub fn covers(&self, ids: &[u32]) -> bool {
        ids.iter().all(|&i| match self {
            TextTable::Identity { size } => (i as usize) < *size,
            TextTable::Compact { ids } => ids.binary_search(&i).is_ok(),
        })
    }
}

/// One clip: the keyframe's codes and the motion codes (both without offsets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipTokens {
    /// Keyframe codes in raster order (`[IMG] … [/IMG]`).
    pub keyframe: Vec<u32>,
    /// Motion codes in `(t, h, w)` order (`[MOV] … [/MOV]`; 135 for Video-LaVIT).
    pub motion: Vec<u32>,
}

/// Text (tokenizer ids) followed by clips.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LavitSequence {
    /// Tokenizer ids of the prompt (empty for none).
    pub text: Vec<u32>,
    /// The clips in order.
    pub clips: Vec<ClipTokens>,
}

impl LavitSequence {
    /// The ids: text slots, then per clip `[IMG] keyframe [/IMG] [MOV] motion [/MOV]`.
    ///
    /// # Errors
    /// A code beyond its range; a text id beyond an identity table.
    pub fn to_ids(&self, layout: &VocabLayout, table: &TextTable) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(
            self.text.len()
                + self
                    .clips
                    .iter()
                    .map(|c| c.keyframe.len() + c.motion.len() + 4)
                    .sum::<usize>(),
        );
        for &t in &self.text {
            out.push(layout.id(Token::Text(table.slot(t)?))?);
        }
        for c in &self.clips {
            push_clip(&mut out, layout, c)?;
        }
        Ok(out)
    }

    /// Parses ids back (the inverse of [`LavitSequence::to_ids`]; text slots map back to
    /// tokenizer ids, `[UNK]` slots are dropped).
    ///
    /// # Errors
    /// [`Error::Malformed`]-like [`Error::InvalidArgument`] for ids out of the vocabulary,
    /// text after the first clip, codes outside their span, spans that do not close, or a
    /// clip without its motion span.
    pub fn from_ids(ids: &[u32], layout: &VocabLayout, table: &TextTable) -> Result<Self> {
        #[derive(PartialEq)]
        enum St {
            Text,
            InImg,
            AfterImg,
            InMov,
        }
        let bad = |i: usize, why: &str| {
            Err(Error::invalid(
                "token sequence",
                format!("position {i}: {why}"),
            ))
        };
        let mut seq = LavitSequence::default();
        let mut st = St::Text;
        let mut cur = ClipTokens {
            keyframe: Vec::new(),
            motion: Vec::new(),
        };
        for (i, &id) in ids.iter().enumerate() {
            let tok = layout.classify(id)?;
            match (&st, tok) {
                (St::Text, Token::Text(s)) => {
                    if !seq.clips.is_empty() {
                        return bad(i, "text after a clip");
                    }
                    if let Some(t) = table.token(s) {
                        seq.text.push(t);
                    }
                }
                (St::Text, Token::ImgStart) => st = St::InImg,
                (St::InImg, Token::Image(c)) => cur.keyframe.push(c),
                (St::InImg, Token::ImgEnd) => st = St::AfterImg,
                (St::AfterImg, Token::MovStart) => st = St::InMov,
                (St::InMov, Token::Motion(c)) => cur.motion.push(c),
                (St::InMov, Token::MovEnd) => {
                    seq.clips.push(std::mem::replace(
                        &mut cur,
                        ClipTokens {
                            keyframe: Vec::new(),
                            motion: Vec::new(),
                        },
                    ));
                    st = St::Text;
                }
                (_, t) => return bad(i, &format!("unexpected {t:?}")),
            }
        }
        if st != St::Text {
            return bad(ids.len(), "the sequence ends inside a clip");
        }
        Ok(seq)
    }
}

fn push_clip(out: &mut Vec<u32>, layout: &VocabLayout, c: &ClipTokens) -> Result<()> {
    out.push(layout.img_start());
    for &k in &c.keyframe {
        out.push(layout.id(Token::Image(k))?);
    }
    out.push(layout.img_end());
    out.push(layout.mov_start());
    for &m in &c.motion {
        out.push(layout.id(Token::Motion(m))?);
    }
    out.push(layout.mov_end());
    Ok(())
}

/// Which kind of training sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// `text [IMG] kf [/IMG] [MOV] m [/MOV]`: loss on the keyframe and motion spans.
    TextToVideo,
    /// The same without text (the unconditional branch of keyframe guidance).
    NoTextToVideo,
    /// `[IMG] kf [/IMG] [MOV] m [/MOV]`: loss on the motion span only (image-to-video).
    ImageToVideo,
    /// Two clips of one video; loss on the second clip's spans (motion continuation).
    Continuation,
    /// `[MOV] m [/MOV]` alone: the unconditional branch of motion guidance, which sees only
    /// the last tag token.
    MotionOnly,
}

/// One training sequence with its loss mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingSample {
    /// The ids.
    pub ids: Vec<u32>,
    /// 1 where the id is a target of the next-token loss (a token whose predecessor is in the
    /// sequence); the tags that open and close a trained span are targets too.
    pub loss_mask: Vec<u8>,
    /// The kind.
    pub kind: SampleKind,
}

impl TrainingSample {
    /// Builds a sample of `kind`. `text` is used by [`SampleKind::TextToVideo`] (and
    /// [`SampleKind::Continuation`] when not empty); `clips` must hold one clip (two for
    /// [`SampleKind::Continuation`]).
    ///
    /// # Errors
    /// The wrong number of clips; codes or text out of range.
    pub fn new(
        kind: SampleKind,
        text: &[u32],
        clips: &[ClipTokens],
        layout: &VocabLayout,
        table: &TextTable,
    ) -> Result<Self> {
        let want = if kind == SampleKind::Continuation {
            2
        } else {
            1
        };
        if clips.len() != want {
            return Err(Error::invalid(
                "clips",
                format!("{kind:?} needs {want} clip(s), got {}", clips.len()),
            ));
        }
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        let push = |ids: &mut Vec<u32>, mask: &mut Vec<u8>, v: &[u32], on: bool| {
            ids.extend_from_slice(v);
            mask.extend(std::iter::repeat_n(u8::from(on), v.len()));
        };
        let text_ids = |t: &[u32]| -> Result<Vec<u32>> {
            t.iter()
                .map(|&x| layout.id(Token::Text(table.slot(x)?)))
                .collect()
        };
        let clip_ids = |c: &ClipTokens| -> Result<(Vec<u32>, usize)> {
            let mut v = Vec::new();
            push_clip(&mut v, layout, c)?;
            Ok((v, c.keyframe.len() + 2))
        };
        match kind {
            SampleKind::TextToVideo | SampleKind::NoTextToVideo => {
                if kind == SampleKind::TextToVideo {
                    push(&mut ids, &mut mask, &text_ids(text)?, false);
                }
                let (v, _) = clip_ids(&clips[0])?;
                push(&mut ids, &mut mask, &v, true);
            }
            SampleKind::ImageToVideo => {
                let (v, kf) = clip_ids(&clips[0])?;
                push(&mut ids, &mut mask, &v[..kf], false);
                push(&mut ids, &mut mask, &v[kf..], true);
            }
            SampleKind::Continuation => {
                push(&mut ids, &mut mask, &text_ids(text)?, false);
                let (a, _) = clip_ids(&clips[0])?;
                push(&mut ids, &mut mask, &a, false);
                let (b, _) = clip_ids(&clips[1])?;
                push(&mut ids, &mut mask, &b, true);
            }
            SampleKind::MotionOnly => {
                let (v, kf) = clip_ids(&clips[0])?;
                push(&mut ids, &mut mask, &v[kf..], true);
            }
        }
        // The first token has no predecessor: never a target.
        if let Some(m) = mask.first_mut() {
            *m = 0;
        }
        Ok(Self {
            ids,
            loss_mask: mask,
            kind,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lavit_layout_matches_the_release() {
        let l = VocabLayout::lavit();
        assert_eq!(l.vocab_size(), 49_412);
        assert_eq!(l.img_start(), 32_000);
        assert_eq!(l.img_end(), 32_001);
        assert_eq!(l.image_base(), 32_002);
        assert_eq!(l.mov_start(), 48_386);
        assert_eq!(l.mov_end(), 48_387);
        assert_eq!(l.motion_base(), 48_388);
        assert_eq!(l.motion_range().end as usize, l.vocab_size());
        assert_eq!(l.classify(48_387).unwrap(), Token::MovEnd);
        assert_eq!(l.classify(49_411).unwrap(), Token::Motion(1023));
        assert!(l.classify(49_412).is_err());
        for id in [
            0, 31_999, 32_000, 32_001, 32_002, 48_385, 48_386, 48_387, 48_388, 49_411,
        ] {
            assert_eq!(l.id(l.classify(id).unwrap()).unwrap(), id);
        }
        assert!(l.id(Token::Image(16_384)).is_err());
    }

    #[test]
    fn compact_table_maps_unknown_ids_to_unk() {
        let t = TextTable::compact_from([49406, 1000, 49407, 1000]);
        assert_eq!(t.slots(), 4);
        assert_eq!(t.slot(1000).unwrap(), 1);
        assert_eq!(t.slot(7).unwrap(), 0);
        assert_eq!(t.token(0), None);
        assert_eq!(t.token(3), Some(49407));
        assert!(t.covers(&[1000, 49406]) && !t.covers(&[5]));
    }

    #[test]
    fn samples_mask_the_right_spans() {
        let l = VocabLayout {
            text: 5,
            image: 4,
            motion: 3,
        };
        let t = TextTable::Identity { size: 5 };
        let c = ClipTokens {
            keyframe: vec![0, 3],
            motion: vec![2, 1],
        };
        let s = TrainingSample::new(
            SampleKind::TextToVideo,
            &[1, 2],
            std::slice::from_ref(&c),
            &l,
            &t,
        )
        .unwrap();
        assert_eq!(s.ids, vec![1, 2, 5, 7, 10, 6, 11, 15, 14, 12]);
        assert_eq!(s.loss_mask, vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
        let s = TrainingSample::new(
            SampleKind::ImageToVideo,
            &[],
            std::slice::from_ref(&c),
            &l,
            &t,
        )
        .unwrap();
        assert_eq!(s.loss_mask, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let s = TrainingSample::new(
            SampleKind::MotionOnly,
            &[],
            std::slice::from_ref(&c),
            &l,
            &t,
        )
        .unwrap();
        assert_eq!(s.ids, vec![11, 15, 14, 12]);
        assert_eq!(s.loss_mask, vec![0, 1, 1, 1]);
        let s = TrainingSample::new(
            SampleKind::Continuation,
            &[3],
            &[c.clone(), c.clone()],
            &l,
            &t,
        )
        .unwrap();
        assert_eq!(s.ids.len(), 1 + 8 + 8);
        assert_eq!(s.loss_mask.iter().filter(|&&m| m == 1).count(), 8);
        assert!(TrainingSample::new(SampleKind::Continuation, &[], &[c], &l, &t).is_err());
    }

    #[test]
    fn malformed_sequences_are_errors() {
        let l = VocabLayout {
            text: 5,
            image: 4,
            motion: 3,
        };
        let t = TextTable::Identity { size: 5 };
        for ids in [
            vec![5, 7],            // unclosed
            vec![5, 6, 7],         // [IMG] [/IMG] [/IMG]
            vec![5, 12],           // motion inside [IMG]
            vec![11, 12],          // [MOV] without keyframe
            vec![5, 6, 11, 12, 1], // text after a clip
            vec![99],
        ] {
            assert!(LavitSequence::from_ids(&ids, &l, &t).is_err(), "{ids:?}");
        }
    }
}
