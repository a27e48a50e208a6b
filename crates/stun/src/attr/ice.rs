//! ICE connectivity-check attributes (RFC 8445 §16.1): PRIORITY,
//! USE-CANDIDATE, ICE-CONTROLLED and ICE-CONTROLLING.

use super::{flag_attribute, int_attribute, AttrType};

int_attribute!(
    /// PRIORITY (0x0024): the candidate priority, 32 bits.
    Priority, AttrType::PRIORITY, u32
);
flag_attribute!(
    /// USE-CANDIDATE (0x0025): nomination flag, empty value.
    UseCandidate, AttrType::USE_CANDIDATE
);
int_attribute!(
    /// ICE-CONTROLLED (0x8029): the agent's 64-bit tie-breaker.
    IceControlled, AttrType::ICE_CONTROLLED, u64
);
int_attribute!(
    /// ICE-CONTROLLING (0x802A): the agent's 64-bit tie-breaker.
    IceControlling, AttrType::ICE_CONTROLLING, u64
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attribute, EncodeAttribute};
    use crate::{Error, TransactionId};

    #[test]
    fn fixed_sizes_enforced() {
        let tid = TransactionId::default();
        assert_eq!(Priority::decode(&[0x6e, 0, 1, 0xff], &tid), Ok(0x6e00_01ff));
        assert!(Priority::decode(&[0; 8], &tid).is_err());
        assert_eq!(
            IceControlling::decode(&[0, 0, 0, 0, 0, 0, 0, 7], &tid),
            Ok(7)
        );
        assert_eq!(
            UseCandidate::decode(&[0], &tid),
            Err(Error::BadAttributeLength {
                attr_type: AttrType::USE_CANDIDATE,
                len: 1
            })
        );
        let mut out = [0u8; 8];
        IceControlled::encode(&0x0102_0304_0506_0708, &tid, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
