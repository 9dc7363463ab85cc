//! Rules across streams, decided on consistency boundaries: a course holds
//! at most its capacity of students and a student takes at most
//! [`MAX_COURSES`] courses, and a username belongs to one user. No
//! aggregate holds either rule: a subscription is decided on the events of
//! its course and of its student together, a username on the claims of
//! that name, wherever they were recorded.

use cqrs_core::prelude::*;
use cqrs_core::{DecisionModel, decision_impl};
use serde::{Deserialize, Serialize};

/// Courses and usernames: an app hosts it with `CqrsBuilder::host::<Courses>()`.
#[derive(Domain)]
pub struct Courses;

/// How many courses one student may take at once.
pub const MAX_COURSES: u32 = 3;

// A course is an aggregate: its own stream, its own rules. Its events are
// tagged by `course_id`, so a subscription's query finds them.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenCourse {
    pub title: String,
    pub capacity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeCapacity {
    pub capacity: u32,
}

#[derive(Debug, Clone, Command)]
pub enum CourseCommand {
    Open(OpenCourse),
    ChangeCapacity(ChangeCapacity),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseOpened {
    pub course_id: String,
    pub title: String,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityChanged {
    pub course_id: String,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum CourseEvent {
    #[event(name = "course.opened", tags(course_id))]
    Opened(CourseOpened),
    #[event(name = "course.capacity_changed", tags(course_id))]
    CapacityChanged(CapacityChanged),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CourseError {
    #[error("a course holds at least one student")]
    NoSeats,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "course", command = CourseCommand, event = CourseEvent, error = CourseError)]
pub struct Course {
    pub capacity: u32,
}

#[aggregate_impl]
impl Course {
    #[command_handler(create)]
    fn open(
        &self,
        command: OpenCourse,
        context: &CommandContext<'_>,
    ) -> Result<CourseOpened, CourseError> {
        if command.capacity == 0 {
            return Err(CourseError::NoSeats);
        }
        Ok(CourseOpened {
            course_id: context.aggregate_id.to_owned(),
            title: command.title,
            capacity: command.capacity,
        })
    }

    #[command_handler]
    fn change_capacity(
        &self,
        command: ChangeCapacity,
        context: &CommandContext<'_>,
    ) -> Result<CapacityChanged, CourseError> {
        if command.capacity == 0 {
            return Err(CourseError::NoSeats);
        }
        Ok(CapacityChanged {
            course_id: context.aggregate_id.to_owned(),
            capacity: command.capacity,
        })
    }

    #[apply]
    fn opened(&mut self, event: &CourseOpened) {
        self.capacity = event.capacity;
    }

    #[apply]
    fn capacity_changed(&mut self, event: &CapacityChanged) {
        self.capacity = event.capacity;
    }
}

// A subscription is a decision on two tags: the course's events and
// subscriptions, and the student's subscriptions in every course.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscribe;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentSubscribed {
    pub course_id: String,
    pub student_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum SubscriptionEvent {
    #[event(name = "course.student_subscribed", tags(course_id, student_id))]
    Subscribed(StudentSubscribed),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("course `{0}` does not exist")]
    NoSuchCourse(String),
    #[error("course `{0}` is full")]
    CourseFull(String),
    #[error("the student already takes course `{0}`")]
    AlreadySubscribed(String),
    #[error("the student already takes {MAX_COURSES} courses")]
    TooManyCourses,
}

/// A student's subscription to a course: decided on the course's events
/// and subscriptions, and on the student's subscriptions.
#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(
    name = "course.subscription",
    command = Subscribe,
    event = SubscriptionEvent,
    error = SubscriptionError
)]
pub struct Subscription {
    #[tag]
    pub course_id: String,
    #[tag]
    pub student_id: String,
    opened: bool,
    capacity: u32,
    students: u32,
    courses: u32,
    subscribed: bool,
}

impl Subscription {
    /// The decision on `student_id` joining `course_id`.
    pub fn of(course_id: &str, student_id: &str) -> Self {
        Self {
            course_id: course_id.to_owned(),
            student_id: student_id.to_owned(),
            ..Self::default()
        }
    }
}

#[decision_impl]
impl Subscription {
    #[command_handler]
    fn subscribe(&self, _: Subscribe) -> Result<StudentSubscribed, SubscriptionError> {
        let course = || self.course_id.clone();
        if !self.opened {
            return Err(SubscriptionError::NoSuchCourse(course()));
        }
        if self.subscribed {
            return Err(SubscriptionError::AlreadySubscribed(course()));
        }
        if self.students >= self.capacity {
            return Err(SubscriptionError::CourseFull(course()));
        }
        if self.courses >= MAX_COURSES {
            return Err(SubscriptionError::TooManyCourses);
        }
        Ok(StudentSubscribed {
            course_id: course(),
            student_id: self.student_id.clone(),
        })
    }

    #[apply]
    fn opened(&mut self, event: &CourseOpened) {
        self.opened = true;
        self.capacity = event.capacity;
    }

    #[apply]
    fn capacity_changed(&mut self, event: &CapacityChanged) {
        self.capacity = event.capacity;
    }

    // Selected by either tag: a subscription to this course, or one of
    // this student's.
    #[apply]
    fn subscribed(&mut self, event: &StudentSubscribed) {
        if event.course_id == self.course_id {
            self.students += 1;
            self.subscribed |= event.student_id == self.student_id;
        }
        if event.student_id == self.student_id {
            self.courses += 1;
        }
    }
}

// A username is unique across all users: a decision on the claims of one
// name.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimUsername {
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsernameClaimed {
    pub username: String,
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum UsernameEvent {
    #[event(name = "user.username_claimed", tags(username))]
    Claimed(UsernameClaimed),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum UsernameError {
    #[error("username `{0}` is taken")]
    Taken(String),
}

/// A username, claimed once.
#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(
    name = "user.username",
    command = ClaimUsername,
    event = UsernameEvent,
    error = UsernameError
)]
pub struct Username {
    #[tag]
    pub username: String,
    owner: Option<String>,
}

impl Username {
    /// The decision on `username`.
    pub fn of(username: &str) -> Self {
        Self {
            username: username.to_owned(),
            owner: None,
        }
    }
}

#[decision_impl]
impl Username {
    #[command_handler]
    fn claim(&self, command: ClaimUsername) -> Result<UsernameClaimed, UsernameError> {
        match &self.owner {
            Some(_) => Err(UsernameError::Taken(self.username.clone())),
            None => Ok(UsernameClaimed {
                username: self.username.clone(),
                user_id: command.user_id,
            }),
        }
    }

    #[apply]
    fn claimed(&mut self, event: &UsernameClaimed) {
        self.owner = Some(event.user_id.clone());
    }
}
