//! SPINDLE: the requests of a transactional producer ([KIP-98]), in their versions without
//! tagged fields (every broker since Kafka 2.x serves them, Kafka 4 included): FindCoordinator
//! (for a transaction coordinator), InitProducerId, AddPartitionsToTxn and EndTxn.
//!
//! [KIP-98]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging

use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    messages::{
        ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError,
        WriteVersionedType, read_versioned_array, write_versioned_array,
    },
    primitives::{
        Boolean, CompactNullableString, Int8, Int16, Int32, Int64, NullableString, String_,
        TaggedFields,
    },
    traits::{ReadType, WriteType},
};

/// FindCoordinator v1–v2: the coordinator of a group (`key_type` 0) or a transactional id (1).
#[derive(Debug)]
pub struct FindCoordinatorRequest {
    pub key: String_,
    pub key_type: Int8,
}

impl RequestBody for FindCoordinatorRequest {
    type ResponseBody = FindCoordinatorResponse;
    const API_KEY: ApiKey = ApiKey::FindCoordinator;
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(2)));
    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(3));
}

impl<W: Write> WriteVersionedType<W> for FindCoordinatorRequest {
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert!((1..=2).contains(&version.0.0));
        self.key.write(writer)?;
        self.key_type.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct FindCoordinatorResponse {
    pub throttle_time_ms: Int32,
    pub error: Option<ApiError>,
    pub error_message: NullableString,
    pub node_id: Int32,
    pub host: String_,
    pub port: Int32,
}

impl<R: Read> ReadVersionedType<R> for FindCoordinatorResponse {
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert!((1..=2).contains(&version.0.0));
        Ok(Self {
            throttle_time_ms: Int32::read(reader)?,
            error: ApiError::new(Int16::read(reader)?.0),
            error_message: NullableString::read(reader)?,
            node_id: Int32::read(reader)?,
            host: String_::read(reader)?,
            port: Int32::read(reader)?,
        })
    }
}

/// InitProducerId v0–v3: a producer id and a new epoch for a transactional id. The coordinator
/// fences every earlier epoch and aborts the transaction it left open, if any.
///
/// SPINDLE: v2 is the first flexible version (compact strings, tagged fields) and v3 adds the
/// producer id and epoch a client may ask to bump (KIP-360); this sends -1/-1, i.e. a fresh
/// init, which is what v0–v1 mean. tansu 0.6 answers v0–v2 with UNKNOWN_SERVER_ERROR (as it does
/// for kafka-python with `api_version=(2, 4)`), so the highest version both sides serve is
/// used: v3 on Kafka 2.5 and later and on tansu.
#[derive(Debug)]
pub struct InitProducerIdRequest {
    pub transactional_id: NullableString,
    pub transaction_timeout_ms: Int32,
}

impl RequestBody for InitProducerIdRequest {
    type ResponseBody = InitProducerIdResponse;
    const API_KEY: ApiKey = ApiKey::InitProducerId;
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(3)));
    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

impl<W: Write> WriteVersionedType<W> for InitProducerIdRequest {
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);
        if v >= 2 {
            CompactNullableString(self.transactional_id.0.clone()).write(writer)?;
        } else {
            self.transactional_id.write(writer)?;
        }
        self.transaction_timeout_ms.write(writer)?;
        if v >= 3 {
            Int64(-1).write(writer)?;
            Int16(-1).write(writer)?;
        }
        if v >= 2 {
            TaggedFields::default().write(writer)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct InitProducerIdResponse {
    pub throttle_time_ms: Int32,
    pub error: Option<ApiError>,
    pub producer_id: Int64,
    pub producer_epoch: Int16,
}

impl<R: Read> ReadVersionedType<R> for InitProducerIdResponse {
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);
        let response = Self {
            throttle_time_ms: Int32::read(reader)?,
            error: ApiError::new(Int16::read(reader)?.0),
            producer_id: Int64::read(reader)?,
            producer_epoch: Int16::read(reader)?,
        };
        if v >= 2 {
            TaggedFields::read(reader)?;
        }
        Ok(response)
    }
}

/// AddPartitionsToTxn v0–v2: the partitions the open transaction writes to.
#[derive(Debug)]
pub struct AddPartitionsToTxnRequest {
    pub transactional_id: String_,
    pub producer_id: Int64,
    pub producer_epoch: Int16,
    pub topics: Vec<AddPartitionsToTxnTopic>,
}

#[derive(Debug)]
pub struct AddPartitionsToTxnTopic {
    pub name: String_,
    pub partitions: Vec<Int32>,
}

impl<W: Write> WriteVersionedType<W> for AddPartitionsToTxnTopic {
    fn write_versioned(
        &self,
        writer: &mut W,
        _version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        self.name.write(writer)?;
        Int32(
            i32::try_from(self.partitions.len())
                .map_err(crate::protocol::traits::WriteError::from)?,
        )
        .write(writer)?;
        for p in &self.partitions {
            p.write(writer)?;
        }
        Ok(())
    }
}

impl RequestBody for AddPartitionsToTxnRequest {
    type ResponseBody = AddPartitionsToTxnResponse;
    const API_KEY: ApiKey = ApiKey::AddPartitionsToTxn;
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(2)));
    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(3));
}

impl<W: Write> WriteVersionedType<W> for AddPartitionsToTxnRequest {
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert!(version.0.0 <= 2);
        self.transactional_id.write(writer)?;
        self.producer_id.write(writer)?;
        self.producer_epoch.write(writer)?;
        write_versioned_array(writer, version, Some(&self.topics))?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct AddPartitionsToTxnResponse {
    pub throttle_time_ms: Int32,
    pub results: Vec<AddPartitionsToTxnTopicResult>,
}

#[derive(Debug)]
pub struct AddPartitionsToTxnTopicResult {
    pub name: String_,
    /// Per partition: its index and error, if any.
    pub results: Vec<(i32, Option<ApiError>)>,
}

impl<R: Read> ReadVersionedType<R> for AddPartitionsToTxnTopicResult {
    fn read_versioned(reader: &mut R, _version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let name = String_::read(reader)?;
        let n = Int32::read(reader)?.0.max(0);
        let mut results = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let partition = Int32::read(reader)?.0;
            results.push((partition, ApiError::new(Int16::read(reader)?.0)));
        }
        Ok(Self { name, results })
    }
}

impl<R: Read> ReadVersionedType<R> for AddPartitionsToTxnResponse {
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert!(version.0.0 <= 2);
        Ok(Self {
            throttle_time_ms: Int32::read(reader)?,
            results: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

/// EndTxn v0–v2: commit (`committed` true) or abort the open transaction.
#[derive(Debug)]
pub struct EndTxnRequest {
    pub transactional_id: String_,
    pub producer_id: Int64,
    pub producer_epoch: Int16,
    pub committed: Boolean,
}

impl RequestBody for EndTxnRequest {
    type ResponseBody = EndTxnResponse;
    const API_KEY: ApiKey = ApiKey::EndTxn;
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(2)));
    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(3));
}

impl<W: Write> WriteVersionedType<W> for EndTxnRequest {
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert!(version.0.0 <= 2);
        self.transactional_id.write(writer)?;
        self.producer_id.write(writer)?;
        self.producer_epoch.write(writer)?;
        self.committed.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct EndTxnResponse {
    pub throttle_time_ms: Int32,
    pub error: Option<ApiError>,
}

impl<R: Read> ReadVersionedType<R> for EndTxnResponse {
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert!(version.0.0 <= 2);
        Ok(Self {
            throttle_time_ms: Int32::read(reader)?,
            error: ApiError::new(Int16::read(reader)?.0),
        })
    }
}
