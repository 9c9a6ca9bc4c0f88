//! The one body decoder: how much of a message body is still to come, by its framing. The fast
//! path relays bodies through it as they are (chunk framing and all), hyper's side decodes the
//! chunks out of them, and the follower finds where each request a client sends ends.

use super::parse::{BadChunk, Chunks, Framing, Scan};

#[derive(Clone, Debug)]
pub enum Remaining {
    /// This many bytes.
    Length(u64),
    Chunks(Chunks),
    /// Until the connection closes.
    UntilClose,
    Done,
}

impl Remaining {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunks(Chunks::default()),
            Framing::UntilClose => Remaining::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Remaining::Done)
    }

    /// The connection closed here: the end of an until-close body (a truncated one otherwise).
    pub fn ends_at_close(&self) -> bool {
        matches!(self, Remaining::UntilClose | Remaining::Done)
    }

    /// The next bytes as they arrived: how many of them belong to the body (it may end in
    /// them; what follows is not its).
    pub fn relay(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        let take = match self {
            Remaining::Done => 0,
            Remaining::UntilClose => bytes.len(),
            Remaining::Length(rest) => {
                let take = bytes
                    .len()
                    .min(usize::try_from(*rest).unwrap_or(usize::MAX));
                *rest -= take as u64;
                if *rest == 0 {
                    *self = Remaining::Done;
                }
                take
            }
            Remaining::Chunks(c) => match c.feed(bytes)? {
                Some(end) => {
                    *self = Remaining::Done;
                    end
                }
                None => bytes.len(),
            },
        };
        Ok(take)
    }

    /// Decode the next bytes: how many were used, up to and including the first run of body
    /// data in them (for a chunked body, the data without the framing).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Scan, BadChunk> {
        if let Remaining::Chunks(c) = self {
            let s = c.data(bytes)?;
            if s.done {
                *self = Remaining::Done;
            }
            return Ok(s);
        }
        let used = self.relay(bytes)?;
        Ok(Scan {
            used,
            data: (used > 0).then_some(0..used),
            done: self.is_done(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_and_decode_agree_on_where_a_body_ends() {
        let chunked = b"3\r\nabc\r\n0\r\n\r\nNEXT";
        let mut r = Remaining::new(Framing::Chunked);
        assert_eq!(r.relay(&chunked[..5]), Ok(5));
        assert!(!r.is_done());
        assert_eq!(r.relay(&chunked[5..]), Ok(chunked.len() - 4 - 5));
        assert!(r.is_done() && r.ends_at_close());
        let mut d = Remaining::new(Framing::Chunked);
        let s = d.decode(chunked).unwrap();
        assert_eq!(
            (&chunked[s.data.clone().unwrap()], s.done),
            (&b"abc"[..], false)
        );
        let rest = d.decode(&chunked[s.used..]).unwrap();
        assert!(rest.done && d.is_done());
        assert_eq!(s.used + rest.used, chunked.len() - 4);

        let mut l = Remaining::new(Framing::Length(4));
        assert_eq!(l.relay(b"ab"), Ok(2));
        let s = l.decode(b"cdNEXT").unwrap();
        assert_eq!((s.used, s.data, s.done), (2, Some(0..2), true));
        assert!(!Remaining::new(Framing::Length(1)).ends_at_close());
        assert!(Remaining::new(Framing::Empty).is_done());
        let mut u = Remaining::new(Framing::UntilClose);
        assert_eq!(u.relay(b"xyz"), Ok(3));
        assert!(!u.is_done() && u.ends_at_close());
        let mut bad = Remaining::new(Framing::Chunked);
        assert_eq!(bad.relay(b"zz\r\n"), Err(BadChunk));
    }
}
